"""Agreement of a verifier with trusted graders, on graded files (gold, completion, expect).

A graded file is JSONL, one case a line: ``gold`` (the reference answer), ``completion`` (what the
model wrote), ``expect`` (true when the trusted grader counts it correct), and optionally ``id`` and
``source`` (cases are grouped by source; without one, the file name is the source). A case whose
``expect`` is null is one the grader could not label (e.g. ``"clear": false``) and is skipped.
``../shared/data/graded/`` holds such files; ``rlbound verify-check FILE.jsonl`` prints this table
for a user's own.

:func:`measure_agreement` grades every case through :func:`rlbound.verify.pool.verify_batch` (the
same path as sampling: extraction, cache, hard-killed workers) and counts, per source, the cases
where the verdict equals ``expect``, with the false acceptances (``expect`` false, verdict correct)
and false rejections kept apart: a false acceptance inflates every pass@k, so it is the worse kind.

This module does not decide which disagreements are the label's fault; callers list those.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rlbound.errors import RlboundError
from rlbound.verify.base import Verdict, Verifier
from rlbound.verify.pool import VerifyCache, verify_batch

__all__ = ["GradedCase", "SourceAgreement", "measure_agreement", "read_graded", "read_task_completions"]


@dataclass(frozen=True)
class GradedCase:
    """One graded completion: the reference, the text, and the trusted grader's label."""

    id: str
    source: str
    gold: str
    completion: str
    expect: bool


@dataclass
class SourceAgreement:
    """Agreement on the cases of one source; the disagreeing cases with their verdicts."""

    source: str
    cases: int = 0
    agree: int = 0
    false_accepts: list[tuple[GradedCase, Verdict]] = field(default_factory=list)
    false_rejects: list[tuple[GradedCase, Verdict]] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.agree / self.cases if self.cases else float("nan")


def _json_lines(path: Path, what: str) -> Iterable[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; one-line errors."""
    if not path.is_file():
        raise RlboundError(f"{what} '{path}' not found")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RlboundError(f"file {path.name} line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise RlboundError(f"file {path.name} line {number}: expected a JSON object")
            yield number, row


def read_graded(path: str | Path) -> list[GradedCase]:
    """The labelled cases of a graded JSONL file; a malformed line is a one-line error."""
    path = Path(path)
    cases = []
    for number, row in _json_lines(path, "graded file"):
        for name in ("gold", "completion", "expect"):
            if name not in row:
                raise RlboundError(f'file {path.name} line {number}: missing field "{name}"')
        expect = row["expect"]
        if expect is None:  # the grader could not label it
            continue
        if not isinstance(expect, bool):
            raise RlboundError(
                f'file {path.name} line {number}: field "expect" must be true, false or null, '
                f"got {expect!r}"
            )
        for name in ("gold", "completion"):
            if not isinstance(row[name], str):
                raise RlboundError(f'file {path.name} line {number}: field "{name}" must be a string')
        cases.append(
            GradedCase(
                id=str(row.get("id", f"{path.name}:{number}")),
                source=str(row.get("source") or path.stem),
                gold=row["gold"],
                completion=row["completion"],
                expect=expect,
            )
        )
    return cases


def read_task_completions(path: str | Path, references: dict[str, str], source: str) -> list[tuple[GradedCase, bool]]:
    """Completions of a task's problems, from JSONL rows ``{"problem_id", "completion"}`` with an
    optional ``"expect"``: (the case with the problem's reference as its gold, whether it has a label).

    ``references`` maps the task's problem ids to their references; an unknown id is a one-line error.
    """
    path = Path(path)
    rows = []
    for number, row in _json_lines(path, "completions file"):
        where = f"file {path.name} line {number}"
        for name in ("problem_id", "completion"):
            if name not in row:
                raise RlboundError(f'{where}: missing field "{name}"')
        pid = str(row["problem_id"])
        if pid not in references:
            raise RlboundError(f"{where}: problem {pid!r} is not in task {source}")
        if not isinstance(row["completion"], str):
            raise RlboundError(f'{where}: field "completion" must be a string')
        expect = row.get("expect")
        if expect is not None and not isinstance(expect, bool):
            raise RlboundError(f'{where}: field "expect" must be true, false or null, got {expect!r}')
        case = GradedCase(id=str(row.get("id", pid)), source=source, gold=references[pid],
                          completion=row["completion"], expect=bool(expect))
        rows.append((case, expect is not None))
    return rows


def measure_agreement(
    cases: Sequence[GradedCase],
    verifier: Verifier | str = "math",
    *,
    timeout_s: float = 10.0,
    cache: VerifyCache | None = None,
    progress_label: str | None = None,
) -> list[SourceAgreement]:
    """Grade every case and count agreement per source (sources in order of first appearance)."""
    verdicts = verify_batch(
        verifier,
        [case.gold for case in cases],
        [case.completion for case in cases],
        timeout_s=timeout_s,
        cache=cache,
        progress_label=progress_label,
    )
    return tally(cases, verdicts)


def tally(cases: Iterable[GradedCase], verdicts: Iterable[Verdict]) -> list[SourceAgreement]:
    """Per-source agreement of given verdicts with the cases' labels."""
    by_source: dict[str, SourceAgreement] = {}
    for case, verdict in zip(cases, verdicts, strict=True):
        entry = by_source.setdefault(case.source, SourceAgreement(case.source))
        entry.cases += 1
        if verdict.correct == case.expect:
            entry.agree += 1
        elif verdict.correct:
            entry.false_accepts.append((case, verdict))
        else:
            entry.false_rejects.append((case, verdict))
    return list(by_source.values())
