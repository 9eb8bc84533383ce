"""Visual reasoning benchmarks: MathVista and MathVision (testmini) records as problems with images.

:func:`mathvista_task` and :func:`mathvision_task` read a local file of the benchmark's records
(JSONL, JSON, or Parquet as the Hugging Face datasets hold them; :mod:`rlbound.tasks.benchmarks`
resolves the file and registers the names ``mathvista`` / ``mathvision``) and build problems that
carry their image (:attr:`rlbound.tasks.base.Problem.images`).

Fields read:

* MathVista: ``pid``, ``query`` (the benchmark's own prompt: hint, question and lettered
  choices; ``question`` with the choices appended where a record lacks it), ``decoded_image``
  (bytes or a path) else ``image`` (a path relative to the file's folder), ``choices``,
  ``answer``, ``question_type`` (``multi_choice`` / ``free_form``), ``answer_type``,
  ``precision``, ``unit`` and the ``metadata`` struct (category, task, grade, source, skills).
* MathVision: ``id``, ``question`` (its ``<image1>`` tag becomes the image's place),
  ``options``, ``decoded_image`` else ``image``, ``answer``, ``level``, ``subject``.

Multiple choice, one convention for both: an item is multiple choice when it has choices
(MathVista's ``question_type == "multi_choice"``, MathVision's non-empty ``options``); its
reference answer is the option's **letter** (A, B, ...), the prompt lists the options by letter,
and the metadata records ``multiple_choice: True``, ``choices`` and ``answer_text`` (the option
itself). MathVista's answers are option texts and are mapped to their letter; MathVision's are
letters already. ``drop_multiple_choice`` (default True) leaves them out, as the large-k pass@k
study (Yue et al. 2025, "Does RL really incentivize reasoning capacity...") did: at large k
guessing among four or five options solves them, so pass@k there says nothing about reasoning.
How many were dropped or kept goes into ``Task.options`` (hence ``run.json``), and the report
says it.

What it does not do: download the benchmarks (``rlbound.tasks.benchmarks`` does), grade with the
benchmarks' own answer extractors (GPT-based for MathVista; the ``math`` verifier grades the
boxed answer here, a letter for multiple choice), or keep MathVista's ``precision`` as a grading
tolerance (it is recorded in the metadata).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from rlbound.errors import RlboundError
from rlbound.images import IMAGE_MARK, record_images
from rlbound.tasks.base import Problem, Task
from rlbound.tasks.files import _as_text, _read_records

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_META_KEYS = ("category", "task", "grade", "source", "context", "language", "skills")


def _records(file: Path) -> Iterator[tuple[int, dict]]:
    """The file's records; a JSON object of records keyed by id (MathVista's
    ``annot_testmini.json``) counts as a list of them."""
    if file.name.lower().endswith(".json"):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RlboundError(f"tasks file '{file}': cannot read ({exc})") from None
        if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
            yield from enumerate(data.values(), start=1)
            return
    for number, record in _read_records(file):
        if not isinstance(record, dict):
            raise RlboundError(f"tasks file '{file}' line {number}: expected an object, got "
                               f"{type(record).__name__}")
        yield number, record


def _image_field(record: dict) -> Any:
    """The record's image: ``decoded_image`` (bytes or a written-out file) when present."""
    decoded = record.get("decoded_image")
    return decoded if decoded not in (None, "", {}) else record.get("image")


def _options_text(options: list[str]) -> str:
    return "\n".join(f"({LETTERS[i]}) {option}" for i, option in enumerate(options))


def _letter(answer: str, options: list[str], where: str) -> str:
    """The letter of ``answer`` among ``options`` (it may be the letter already)."""
    if answer in options:
        return LETTERS[options.index(answer)]
    stripped = answer.strip().strip("()").upper()
    if len(stripped) == 1 and stripped in LETTERS[:len(options)]:
        return stripped
    raise RlboundError(f"{where}: answer {answer!r} is neither one of the choices nor their letter")


def _check_file(path: str, drop_multiple_choice: Any) -> Path:
    if not isinstance(drop_multiple_choice, bool):
        raise RlboundError(f"drop_multiple_choice must be true or false, got {drop_multiple_choice!r}")
    file = Path(path)
    if not file.is_file():
        raise RlboundError(f"tasks file '{path}' not found")
    return file


def _task(name: str, file: Path, problems: list[Problem], dropped: int, kept: int,
          drop_multiple_choice: bool, limit: int | None, template: str, verifier: str) -> Task:
    if not problems:
        detail = f" ({dropped} multiple-choice items dropped)" if dropped else ""
        raise RlboundError(f"tasks file '{file}' holds no problems{detail}")
    return Task(name=name, problems=tuple(problems), verifier=verifier, template=template, options={
        "path": str(file.resolve()), "limit": limit, "drop_multiple_choice": drop_multiple_choice,
        "multiple_choice_dropped": dropped, "multiple_choice_kept": kept})


def _vision_task(name: str, path: str, id_field: str, required: tuple[str, ...],
                 is_multiple: Callable[[dict], bool], to_problem: Callable[[str, dict, bool, str, Path], Problem],
                 limit: int | None, drop_multiple_choice: bool, template: str, verifier: str) -> Task:
    """The records of ``path`` as problems: required fields and unique ids checked, multiple-choice
    items dropped or kept (and counted), each kept record made a Problem by ``to_problem(id,
    record, multiple, where, folder)`` (``folder``: the file's, where image paths start);
    ``limit`` counts kept items."""
    file = _check_file(path, drop_multiple_choice)
    problems: list[Problem] = []
    seen: set[str] = set()
    dropped = kept = 0
    for number, record in _records(file):
        where = f"tasks file '{path}' line {number}"
        for key in (id_field, *required):
            if record.get(key) in (None, ""):
                raise RlboundError(f'{where}: missing field "{key}"')
        pid = _as_text(record[id_field])
        if pid in seen:
            raise RlboundError(f"{where}: duplicate problem id {pid!r}")
        seen.add(pid)
        multiple = is_multiple(record)
        if multiple and drop_multiple_choice:
            dropped += 1
            continue
        problems.append(to_problem(pid, record, multiple, where, file.parent))
        kept += multiple
        if limit is not None and len(problems) >= limit:
            break
    return _task(name, file, problems, dropped, kept, drop_multiple_choice, limit, template, verifier)


def _mathvista_multiple(record: dict) -> bool:
    return record.get("question_type") == "multi_choice" or (
        record.get("question_type") is None and bool(record.get("choices")))


def _mathvista_problem(pid: str, record: dict, multiple: bool, where: str, folder: Path) -> Problem:
    choices = [_as_text(c) for c in record.get("choices") or []]
    answer = _as_text(record["answer"])
    question = record.get("query") or ""
    if not question:
        if not record.get("question"):
            raise RlboundError(f'{where}: missing field "query" (or "question")')
        question = _as_text(record["question"])
        if multiple:
            question += "\nChoices:\n" + _options_text(choices)
    metadata: dict[str, Any] = {
        "multiple_choice": multiple, "question_type": record.get("question_type"),
        "answer_type": record.get("answer_type"), "precision": record.get("precision"),
        "unit": record.get("unit")}
    inner = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    metadata.update({k: inner[k] for k in _META_KEYS if inner.get(k) not in (None, "")})
    if multiple:
        if not choices:
            raise RlboundError(f"{where}: a multi_choice item without choices")
        metadata.update(choices=choices, answer_text=answer)
        answer = _letter(answer, choices, where)
    images = record_images(_image_field(record), folder, where)
    return Problem(pid, _as_text(question), answer, metadata, images)


def mathvista_task(path: str, limit: int | None = None, drop_multiple_choice: bool = True,
                   template: str = "chat", verifier: str = "math") -> Task:
    """MathVista records from ``path`` (see the module docstring); ``limit`` counts kept items."""
    return _vision_task("mathvista", path, "pid", ("answer",), _mathvista_multiple, _mathvista_problem,
                        limit, drop_multiple_choice, template, verifier)


def _mathvision_problem(pid: str, record: dict, multiple: bool, where: str, folder: Path) -> Problem:
    options = [_as_text(o) for o in record.get("options") or []]
    answer = _as_text(record["answer"])
    images = record_images(_image_field(record), folder, where)
    question = str(record["question"]).strip()
    if images:  # the question's own <image1> tag marks where the image goes
        question = re.sub(r"<image1>", IMAGE_MARK, question, count=1)
    metadata: dict[str, Any] = {"multiple_choice": multiple, "level": record.get("level"),
                                "subject": record.get("subject")}
    if multiple:
        if options != list(LETTERS[:len(options)]):  # options spelled out, not only in the image
            question += "\nChoices:\n" + _options_text(options)
        answer = _letter(answer, options, where)
        metadata.update(choices=options, answer_text=options[LETTERS.index(answer)])
    return Problem(pid, question, answer, metadata, images)


def mathvision_task(path: str, limit: int | None = None, drop_multiple_choice: bool = True,
                    template: str = "chat", verifier: str = "math") -> Task:
    """MathVision records from ``path`` (see the module docstring); ``limit`` counts kept items."""
    return _vision_task("mathvision", path, "id", ("question", "answer"), lambda r: bool(r.get("options")),
                        _mathvision_problem, limit, drop_multiple_choice, template, verifier)
