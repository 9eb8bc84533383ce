"""The file task: benchmark problems from a local JSONL, JSON, CSV or Parquet file.

Field names are configurable and default to the common ones (``problem``/``question``,
``answer``/``final_answer``, ``id``/``unique_id``/``idx``). The reference answer is taken from the
answer field as given, or embedded in a longer text:

* ``answer_format="gsm8k"``: the text after the last ``####`` (GSM8K), commas dropped;
* ``answer_format="boxed"``: the last ``\\boxed{}`` of the field (MATH / Minerva solutions);
* ``answer_format="auto"`` (default): ``gsm8k`` when the text holds a ``####`` line, otherwise
  the field as given; with no answer field at all, the last ``\\boxed{}`` of ``solution``.

List answers (OlympiadBench's ``final_answer``) are joined with ", ". Every problem a user can
fix is reported with the file and line: ``tasks file 'x.jsonl' line 17: missing field "answer"``.
Hub datasets are not fetched here; download them to a file first. With ``image_field`` problems
carry images (visual tasks; :mod:`rlbound.images` says which forms a field may hold).
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from rlbound.errors import RlboundError
from rlbound.images import record_images
from rlbound.tasks.base import Problem, Task, register_task

QUESTION_FIELDS = ("problem", "question", "prompt", "input", "text")
ANSWER_FIELDS = ("answer", "final_answer", "target", "label")
ID_FIELDS = ("id", "unique_id", "idx", "task_id", "problem_id")
ANSWER_FORMATS = ("auto", "field", "gsm8k", "boxed")


def _read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line or record number, record) from a JSONL(.gz), JSON or Parquet file."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise RlboundError(f"tasks file '{path}': not a readable Parquet file ({exc})") from None
        for i, record in enumerate(table.to_pylist(), start=1):
            yield i, record
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="" if ".csv" in name else None) as fh:
            if name.endswith(".csv") or name.endswith(".csv.gz"):
                try:
                    # line numbers count the header as line 1, as an editor shows them
                    for i, record in enumerate(csv.DictReader(fh), start=2):
                        yield i, record
                except csv.Error as exc:
                    raise RlboundError(f"tasks file '{path}': not a readable CSV file ({exc})") from None
                return
            if name.endswith(".json") or name.endswith(".json.gz"):
                try:
                    data = json.load(fh)
                except json.JSONDecodeError as exc:
                    raise RlboundError(
                        f"tasks file '{path}' line {exc.lineno}: invalid JSON ({exc.msg})"
                    ) from None
                if isinstance(data, dict):
                    data = next((v for v in data.values() if isinstance(v, list)), None)
                if not isinstance(data, list):
                    raise RlboundError(f"tasks file '{path}': expected a JSON list of problems")
                yield from enumerate(data, start=1)
                return
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RlboundError(
                        f"tasks file '{path}' line {lineno}: invalid JSON ({exc.msg})"
                    ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RlboundError(f"tasks file '{path}': cannot read ({exc})") from None


def _pick(record: dict, chosen: str | None, candidates: tuple[str, ...]) -> str | None:
    if chosen is not None:
        return chosen
    return next((f for f in candidates if f in record), None)


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(_as_text(v) for v in value)
    return str(value).strip()


def _gsm8k_answer(text: str) -> str | None:
    if "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip().replace(",", "")


def _reference(record: dict, answer_field: str | None, answer_format: str) -> str | None:
    """The reference answer of one record, or None when it cannot be found."""
    from rlbound.verify.extract import last_boxed

    if answer_field is None or answer_field not in record:
        if answer_format in ("auto", "boxed") and isinstance(record.get("solution"), str):
            return last_boxed(record["solution"])
        return None
    value = record[answer_field]
    if value is None:
        return None
    text = _as_text(value)
    if answer_format == "gsm8k" or (answer_format == "auto" and "\n####" in text):
        return _gsm8k_answer(text)
    if answer_format == "boxed":
        return last_boxed(text)
    return text


@register_task("file")
def file_task(
    path: str,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    answer_format: str = "auto",
    limit: int | None = None,
    verifier: str = "math",
    template: str = "qwen-boxed",
    image_field: str | None = None,
) -> Task:
    """Problems from ``path``; see the module docstring for the field and answer options.

    ``image_field`` names the field holding each problem's image or list of images (paths
    relative to the file's folder, bytes, ``{"bytes": ...}`` dicts, base64 data URLs; see
    :func:`rlbound.images.image_source`); a null or empty value means no image.
    """
    file = Path(path)
    if not file.is_file():
        raise RlboundError(f"tasks file '{path}' not found")
    if answer_format not in ANSWER_FORMATS:
        raise RlboundError(
            f"answer_format must be one of {', '.join(ANSWER_FORMATS)}, got {answer_format!r}"
        )
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for lineno, record in _read_records(file):
        where = f"tasks file '{path}' line {lineno}"
        if not isinstance(record, dict):
            raise RlboundError(f"{where}: expected a JSON object, got {type(record).__name__}")
        q_field = _pick(record, question_field, QUESTION_FIELDS)
        if q_field is None or q_field not in record:
            wanted = question_field or " or ".join(QUESTION_FIELDS)
            raise RlboundError(f'{where}: missing field "{wanted}"')
        a_field = _pick(record, answer_field, ANSWER_FIELDS)
        reference = _reference(record, a_field, answer_format)
        if reference is None or reference == "":
            wanted = answer_field or "answer"
            detail = "" if a_field in record else f'missing field "{wanted}"'
            raise RlboundError(f"{where}: {detail or f'no reference answer in field {a_field!r}'}")
        i_field = _pick(record, id_field, ID_FIELDS)
        if id_field is not None and id_field not in record:
            raise RlboundError(f'{where}: missing field "{id_field}"')
        pid = _as_text(record[i_field]) if i_field else f"{file.stem.split('.')[0]}-{len(problems)}"
        if pid in seen:
            raise RlboundError(f"{where}: duplicate problem id {pid!r} (first at line {seen[pid]})")
        seen[pid] = lineno
        images: tuple = ()
        if image_field is not None:
            if image_field not in record:
                raise RlboundError(f'{where}: missing field "{image_field}"')
            images = record_images(record[image_field], file.parent, where)
        metadata = {k: v for k, v in record.items()
                    if k not in (q_field, a_field, image_field) and _small(v)}
        problems.append(Problem(pid, _as_text(record[q_field]), reference, metadata, images))
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise RlboundError(f"tasks file '{path}' holds no problems")
    return Task(
        name=f"file:{file.name}",
        problems=tuple(problems),
        verifier=verifier,
        template=template,
        options={
            "path": str(file.resolve()),
            "question_field": question_field,
            "answer_field": answer_field,
            "id_field": id_field,
            "answer_format": answer_format,
            "limit": limit,
            **({"image_field": image_field} if image_field is not None else {}),
        },
    )


def _small(value: Any) -> bool:
    """Keep short scalar metadata (level, subject, …); drop long texts such as solutions."""
    return isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) <= 200)
