"""``rlbound import``: completions generated elsewhere, as a run directory graded by rlbound.

:func:`import_samples` reads a samples file, matches every completion to a problem of a task,
grades it with rlbound's verifier and stores it as a run (:mod:`rlbound.store`), so that every
analysis, ``rlbound score``, ``rlbound distill`` and ``rlbound report`` work on it. Formats,
detected from the first record (``fmt`` forces one):

* ``lm-eval``: lm-evaluation-harness ``--log_samples`` output (``samples_<task>_<date>.jsonl``):
  ``doc_id``, ``doc``, ``target``, ``arguments``, ``resps`` (the raw generations: one list per
  request, one entry per repeat), ``filtered_resps``, ``filter``, ... Every raw generation is a
  sample; a document logged once per filter is imported once (the lines of the file's first
  filter). The id is ``doc_id`` (the dataset row); ``id_field="doc.unique_id"`` picks a field of
  the document instead. Log-likelihood tasks (multiple choice) hold scores, not text: refused.
* ``evalplus``: ``samples.jsonl`` of ``{"task_id", "solution"}`` (a whole program) or
  ``{"task_id", "completion"}`` (the continuation of the prompt); the code verifier takes both.
* ``verl``: a verl generations dump (``trainer.validation_data_dir`` / ``rollout_data_dir``:
  ``<step>.jsonl`` of ``{"input", "output", "gts", "score", "step", ...}``). verl writes no problem
  id: each line goes to the problem whose question text appears in its ``input`` (the longest
  such question), unless ``id_field`` names a field that holds the id.
* ``jsonl``: ``{"problem_id", "completion"}`` per line (``id_field`` / ``completion_field`` map
  other names; dotted names reach into nested objects).

Each problem's samples get sample indices in file order, after those the run already holds from
other files. What the file does not say is recorded as unknown: run.json's ``config`` has engine
``"import"``, the model ``model_name`` (or ``"unknown"``), sampling parameters and seed null; rows
have a null seed, token count and finish reason and NaN log-probabilities. The prompt template
is the one given (default: the task's) and run.json says whether it was given
(``imports[].template_given``): ``rlbound score`` and ``rlbound distill`` render prompts with it.

Importing the same file twice writes nothing twice: run.json lists every imported file
(``imports``: its sha256, format, fields, lines and the first sample index of each problem,
recorded before any row is written), so re-importing a file (same content, wherever it lies)
fills only what an interrupted import left out. Rows are graded and written by the sampler's
verifier thread and shard writer (:class:`rlbound.sampler.VerifyAndWrite`), under the run's
one-writer lock.

What it does not do: recover token ids, log-probabilities or seeds; check the file's own scores
against rlbound's verdicts; read evalplus's per-task directories of ``.py`` files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from rlbound.engines.base import EngineInfo, Sample, SampleRequest, SamplingParams
from rlbound.errors import RlboundError
from rlbound.progress import progress
from rlbound.tasks.base import Task
from rlbound.verify.base import Verifier

__all__ = ["FORMATS", "ImportResult", "ImportedSample", "import_samples", "read_samples_file"]

FORMATS = ("lm-eval", "evalplus", "verl", "jsonl")
ENGINE = "import"
_DEFAULT_ID = {"lm-eval": "doc_id", "evalplus": "task_id", "verl": None, "jsonl": "problem_id"}
_DEFAULT_TEXT = {"lm-eval": "resps", "evalplus": "solution|completion", "verl": "output", "jsonl": "completion"}


class ImportedSample(Sample):
    """A completion generated elsewhere: its text is known; its tokens, their log-probabilities
    and why it ended are not (null token count and finish reason, NaN log-probs)."""

    def __init__(self, text: str):
        super().__init__(text=text, token_ids=[], finish_reason=None, token_logprobs=[])  # type: ignore[arg-type]

    @property
    def token_count(self) -> None:  # type: ignore[override]
        return None

    @property
    def logprob_sum(self) -> float:
        return float("nan")


@dataclass
class ImportedFile:
    """A parsed samples file: its completions in file order, and what it said about itself."""

    path: Path
    fmt: str
    sha256: str
    id_field: str | None
    completion_field: str
    samples: list[tuple[int, str, str]] = field(default_factory=list)
    """(line number, problem id, completion) in file order."""
    lines: int = 0
    skipped_lines: int = 0
    """lm-eval: lines of another filter than the file's first (the same generations again)."""
    recorded: dict[str, Any] = field(default_factory=dict)
    """What the file records about its generation (lm-eval's generation arguments, verl's steps)."""


@dataclass
class ImportResult:
    """What one call of :func:`import_samples` did."""

    path: Path
    fmt: str
    imported: int
    already_present: int
    problems: int
    timeouts: int = 0
    skipped_lines: int = 0
    missing_problems: int = 0
    """Problems of the task with no sample in the file."""


def _where(path: Path, line: int) -> str:
    return f"samples file '{path.name}' line {line}"


def _records(path: Path, digest: Any) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSONL file (``.gz`` too), hashing its bytes into ``digest``."""
    if not path.is_file():
        raise RlboundError(f"samples file '{path}' not found")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                digest.update(raw)
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
                    raise RlboundError(f"{_where(path, number)}: invalid JSON ({msg})") from None
                if not isinstance(record, dict):
                    raise RlboundError(f"{_where(path, number)}: expected a JSON object, got {type(record).__name__}")
                yield number, record
    except (OSError, EOFError) as exc:
        raise RlboundError(f"samples file '{path}' cannot be read ({exc})") from None


def detect_format(record: dict) -> str:
    """The format of a samples file from its first record's fields."""
    if "doc_id" in record and "resps" in record:
        return "lm-eval"
    if "task_id" in record and ("solution" in record or "completion" in record):
        return "evalplus"
    if "input" in record and "output" in record:
        return "verl"
    return "jsonl"


def _get(record: dict, path: str) -> Any:
    """``record``'s value at a dotted ``path`` (``doc.unique_id``), or KeyError."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def _id_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _lm_eval_texts(where: str, resps: Any) -> list[str]:
    """The raw generations of one lm-eval record: ``resps`` is one list per request, one
    entry per repeat (strings); deeper lists are log-likelihood scores."""
    if not isinstance(resps, list):
        raise RlboundError(f"{where}: field \"resps\" is not a list")
    texts = []
    for entry in resps:
        for item in entry if isinstance(entry, list) else [entry]:
            if not isinstance(item, str):
                raise RlboundError(f"{where}: \"resps\" holds log-likelihood scores, not generated text (a "
                                   "multiple-choice task); rlbound imports generated completions only")
            texts.append(item)
    return texts


class _PromptMatcher:
    """verl dumps carry no id: the problem whose question appears in a line's input."""

    def __init__(self, task: Task):
        self.questions = sorted(((p.prompt.strip(), p.id) for p in task.problems if p.prompt.strip()),
                                key=lambda qp: -len(qp[0]))
        self.task_name = task.name
        self.cache: dict[str, str | None] = {}

    def __call__(self, where: str, text: Any) -> str:
        if not isinstance(text, str):
            raise RlboundError(f"{where}: field \"input\" is not text")
        if text not in self.cache:
            found = [(q, pid) for q, pid in self.questions if q in text]
            best = [pid for q, pid in found if len(q) == len(found[0][0])] if found else []
            if len(set(best)) > 1:
                raise RlboundError(f"{where}: its input holds the questions of several problems of task "
                                   f"{self.task_name!r} ({best[0]!r}, {best[1]!r}); give the id with --id-field")
            self.cache[text] = best[0] if best else None
        pid = self.cache[text]
        if pid is None:
            raise RlboundError(f"{where}: no question of task {self.task_name!r} appears in its input; "
                               "is this the task the rollouts were made on? (or give the id with --id-field)")
        return pid


def read_samples_file(path: str | Path, task: Task, fmt: str = "auto", id_field: str | None = None,
                      completion_field: str | None = None) -> ImportedFile:
    """Parse a samples file and match every completion to a problem of ``task`` (see the module
    docstring); an unknown id or a bad line is a one-line error naming the line."""
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise RlboundError(f"unknown samples format {fmt!r}; choose auto, {', '.join(FORMATS)}")
    ids = {p.id for p in task.problems}
    digest = hashlib.sha256()
    parsed: ImportedFile | None = None
    matcher: _PromptMatcher | None = None
    first_filter: Any = None
    for number, record in _records(path, digest):
        where = _where(path, number)
        if parsed is None:
            kind = detect_format(record) if fmt == "auto" else fmt
            parsed = ImportedFile(path, kind, "", id_field or _DEFAULT_ID[kind],
                                  completion_field or _DEFAULT_TEXT[kind])
            first_filter = record.get("filter")
            if kind == "verl" and parsed.id_field is None:
                matcher = _PromptMatcher(task)
        parsed.lines += 1
        kind = parsed.fmt
        if kind == "lm-eval" and record.get("filter") != first_filter:
            parsed.skipped_lines += 1
            continue
        # the problem id
        if matcher is not None:
            pid = matcher(where, record.get("input"))
        else:
            try:
                pid = _id_text(_get(record, parsed.id_field))
            except KeyError:
                raise RlboundError(f"{where}: missing field \"{parsed.id_field}\" (the problem id; "
                                   "map another field with --id-field)") from None
            if pid is None:
                raise RlboundError(f"{where}: field \"{parsed.id_field}\" is not a problem id")
            if pid not in ids:
                raise RlboundError(f"{where}: problem id {pid!r} is not in task {task.name!r}"
                                   f"{_id_hint(record, ids, task)}")
        # the completion(s)
        names = parsed.completion_field.split("|")
        name = next((n for n in names if _has(record, n)), None)
        if name is None:
            raise RlboundError(f"{where}: missing field \"{names[0]}\"" + (
                f" (or \"{names[1]}\")" if len(names) > 1 else "") + "; map another field with --completion-field")
        value = _get(record, name)
        if kind == "lm-eval" and name == "resps":
            texts = _lm_eval_texts(where, value)
        elif isinstance(value, str):
            texts = [value]
        else:
            raise RlboundError(f"{where}: field \"{name}\" is not text")
        parsed.samples += [(number, pid, text) for text in texts]
        _note_generation(parsed, record)
    if parsed is None:
        raise RlboundError(f"samples file '{path}' holds no samples")
    parsed.sha256 = digest.hexdigest()
    return parsed


def _has(record: dict, path: str) -> bool:
    try:
        _get(record, path)
        return True
    except KeyError:
        return False


def _id_hint(record: dict, ids: set[str], task: Task) -> str:
    """Where the right id may be: fields of the record (or its lm-eval ``doc``) that hold one."""
    for prefix, obj in (("doc.", record.get("doc")), ("", record)):
        if isinstance(obj, dict):
            for key, value in obj.items():
                if _id_text(value) in ids:
                    return f"; field \"{prefix}{key}\" holds one of its ids: use --id-field {prefix}{key}"
    examples = ", ".join(repr(p.id) for p in task.problems[:2])
    return f" (its ids look like {examples}); map the id with --id-field"


def _note_generation(parsed: ImportedFile, record: dict) -> None:
    """Keep what the file says about how it was generated (recorded in run.json, not trusted)."""
    if parsed.fmt == "lm-eval" and "generation_kwargs" not in parsed.recorded:
        args = record.get("arguments")
        first = None
        if isinstance(args, dict):  # lm-eval >= 0.4.3: {"gen_args_0": {"arg_0": prompt, "arg_1": kwargs}}
            first = (args.get("gen_args_0") or {}).get("arg_1")
        elif isinstance(args, list) and args and isinstance(args[0], list) and len(args[0]) > 1:
            first = args[0][1]
        if isinstance(first, dict):
            parsed.recorded["generation_kwargs"] = first
    elif parsed.fmt == "verl" and "step" in record:
        steps = parsed.recorded.setdefault("steps", [])
        if record["step"] not in steps:
            steps.append(record["step"])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def import_samples(
    file: str | Path,
    task: Task,
    verifier: Verifier,
    out: str | Path,
    *,
    fmt: str = "auto",
    model_name: str | None = None,
    id_field: str | None = None,
    completion_field: str | None = None,
    template: str | None = None,
    label: str | None = None,
    verify_timeout_s: float = 5.0,
    shard_samples: int = 1024,
) -> ImportResult:
    """Grade the completions of ``file`` on ``task`` and store them in run ``out`` (created, or
    extended: see the module docstring for the formats, unknowns and the no-duplicates contract)."""
    from rlbound.sampler import VerifyAndWrite, run_config
    from rlbound.store import RunWriter
    from rlbound.tasks.templates import get_template

    parsed = read_samples_file(file, task, fmt, id_field, completion_field)
    template_name = template or task.template
    get_template(template_name)  # an unknown template is refused before anything is written
    info = EngineInfo(engine=ENGINE, model=model_name or "unknown")
    # The run's settings as the sampler records them, with what an import does not know as null.
    config = {**run_config(task, template_name, info, SamplingParams(), 0, verifier), "sampling": None, "seed": None}
    counts: dict[str, int] = {}
    for _, pid, _ in parsed.samples:
        counts[pid] = counts.get(pid, 0) + 1
    with RunWriter(out, config, 0, label) as writer:
        present = writer.existing_keys()
        imports = list(writer.meta.get("imports") or [])
        entry = next((e for e in imports if e.get("sha256") == parsed.sha256), None)
        if entry is None:  # a new file: its samples go after those already stored
            next_free: dict[str, int] = {}
            for pid, idx in present:
                next_free[pid] = max(next_free.get(pid, 0), idx + 1)
            entry = {"file": str(parsed.path.resolve()), "sha256": parsed.sha256, "format": parsed.fmt,
                     "id_field": parsed.id_field if parsed.fmt != "verl" or id_field else "matched by question",
                     "completion_field": parsed.completion_field, "lines": parsed.lines,
                     "skipped_lines": parsed.skipped_lines, "samples": len(parsed.samples),
                     "template_given": template is not None, "recorded": parsed.recorded,
                     "offsets": {pid: next_free.get(pid, 0) for pid in counts}, "started": _now()}
            imports.append(entry)
            writer.save_meta(imports=imports)  # before any row, so a rerun uses the same indices
        offsets = entry["offsets"]
        seen: dict[str, int] = {}
        todo = []
        for _, pid, text in parsed.samples:
            idx = offsets[pid] + seen.get(pid, 0)
            seen[pid] = seen.get(pid, 0) + 1
            if (pid, idx) not in present:
                todo.append((pid, idx, text))
        problems = {p.id: p for p in task.problems}
        pipeline = VerifyAndWrite(writer, verifier, problems, verify_timeout_s,
                                  max(1, min(shard_samples, len(todo))), 30.0)
        try:
            with progress("importing", total=len(todo), unit="samples") as bar:
                for pid, idx, text in todo:
                    pipeline.put(SampleRequest((pid, idx), "", None), ImportedSample(text))  # type: ignore[arg-type]
                    bar.advance(1)
                pipeline.finish()
        finally:
            pipeline.finish()
            stored = writer.existing_keys()
            per_problem: dict[str, int] = {}
            for pid, _ in stored:
                per_problem[pid] = per_problem.get(pid, 0) + 1
            if "finished" not in entry and all((pid, offsets[pid] + j) in stored
                                               for pid, c in counts.items() for j in range(c)):
                entry["finished"] = _now()
            writer.save_meta(imports=imports, samples=len(stored), n=max(per_problem.values(), default=0),
                             verify_timeouts=pipeline.timeouts + writer.meta.get("verify_timeouts", 0))
    return ImportResult(Path(out), parsed.fmt, pipeline.written, len(parsed.samples) - len(todo), len(counts),
                        pipeline.timeouts, parsed.skipped_lines, len(task) - len(counts))
