"""Re-grading a stored run under the current verifier rules: ``rlbound reverify RUN``.

When answer extraction or normalisation changes (``rlbound.verify.extract.RULES_VERSION``), or the
math verifier's backend (Math-Verify) is upgraded, the verdicts stored with a run were made under
other rules than the ones rlbound applies now, and the sampler refuses to top such a run up.
:func:`reverify_run` grades every stored sample again, with nothing re-sampled:

1. the run's own verifier is rebuilt from run.json (``config.verifier``: its name and the options
   its constructor takes, :func:`rlbound.scoring.verifier_from_run`), so only the rules change,
   never a user's choice such as ``last_number_fallback``; the task is rebuilt from run.json
   (:func:`rlbound.scoring.task_from_run`) for the references;
2. every completion goes through :func:`rlbound.verify.pool.verify_batch` (extraction, cache,
   hard-killed workers) with a progress bar;
3. the new verdicts are written *beside* the old ones, atomically, as
   ``RUN/verdicts/<tag>.parquet`` (the shards in ``samples/`` are never touched), then run.json
   records the file, makes it current and sets ``config.verifier`` to the new settings, so a later
   top-up grades new samples under the same rules. The layout is in :mod:`rlbound.store`.

Verdicts are compared with the run's current ones (what ``load_run`` returned before) and counted
by kind: incorrect → correct, correct → incorrect, each status change (``no_answer → ok``) and
changed answers. A run whose verifier settings are already current is left alone (nothing is
written) unless ``force`` asks to grade it again, e.g. with a larger ``timeout_s`` after
timeouts; a forced re-grade that changes no verdict writes nothing either.

It holds the run's one-writer lock (:mod:`rlbound.runlock`) while it reads and writes, so it
never interleaves with a sampler topping the same run up; a locked run is refused with an error
naming the holder.

What it does not do: it does not re-sample, re-score or rebuild reports (rerun ``rlbound report``),
and does not delete the verdict files it supersedes (run.json lists them all).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rlbound.atomic import atomic_write
from rlbound.errors import RlboundError
from rlbound.runlock import lock_run
from rlbound.scoring import task_from_run, verifier_from_run
from rlbound.store import (
    VERDICT_DIR,
    VERDICT_SCHEMA,
    current_verdicts,
    describe_verifier,
    package_versions,
    read_meta,
    read_samples,
    write_meta,
)
from rlbound.verify.base import STATUS_TIMEOUT, Verifier, verifier_spec
from rlbound.verify.pool import VerifyCache, verify_batch

__all__ = ["ReverifyResult", "describe", "reverify_run", "verdicts_tag"]

UNCHANGED = "unchanged"
TO_CORRECT = "incorrect → correct"
TO_INCORRECT = "correct → incorrect"
ANSWER_CHANGED = "answer changed"


@dataclass
class ReverifyResult:
    """What one call of :func:`reverify_run` did.

    ``outcome`` is ``"written"`` (a new verdicts file is current), ``"current"`` (the run's verifier
    settings were already current: nothing graded, nothing written) or ``"unchanged"`` (graded
    again under ``force``; no verdict changed, nothing written). ``changes`` counts samples by kind
    of change (a sample can count under several kinds; ``unchanged`` counts the rest).
    """

    path: Path
    outcome: str
    old: dict[str, Any]
    new: dict[str, Any]
    samples: int = 0
    changes: dict[str, int] = field(default_factory=dict)
    timeouts: int = 0
    file: Path | None = None

    @property
    def changed(self) -> int:
        return self.samples - self.changes.get(UNCHANGED, 0)


def verdicts_tag(spec: dict[str, Any]) -> str:
    """The file name stem of the verdicts made under ``spec``: ``<name>-rules<N>-<hash of spec>``."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    rules = (spec.get("settings") or {}).get("rules", 1)
    return f"{spec.get('name', 'verifier')}-rules{rules}-{digest}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _rebuild_verifier(meta: dict[str, Any], run: Path, overrides: dict[str, Any] | None = None) -> Verifier:
    spec = (meta.get("config") or {}).get("verifier")
    if not isinstance(spec, dict) or not spec.get("name"):
        raise RlboundError(f"run '{run}': run.json records no verifier")
    try:
        return verifier_from_run(meta, overrides)
    except RlboundError as exc:
        raise RlboundError(f"run '{run}': cannot rebuild its verifier ({exc})") from None
    except (TypeError, ValueError) as exc:
        raise RlboundError(f"run '{run}': cannot rebuild its verifier {spec['name']!r} ({exc})") from None


def _first_rows(table: pa.Table) -> dict[str, list]:
    """The table's columns as lists, one row per key (repeated keys: the first, as in Run.samples)."""
    columns = {c: table.column(c).to_pylist() for c in table.column_names}
    rows: dict[str, list] = {c: [] for c in columns}
    seen: set[tuple[str, int]] = set()
    for i, key in enumerate(zip(columns["problem_id"], columns["sample_idx"])):
        if key not in seen:
            seen.add(key)
            for c in rows:
                rows[c].append(columns[c][i])
    return rows


def _count_changes(before: dict[str, list], after: list) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for answer, correct, status, verdict in zip(before["answer"], before["correct"], before["verify_status"], after):
        same = True
        if bool(correct) != verdict.correct:
            counts[TO_CORRECT if verdict.correct else TO_INCORRECT] += 1
            same = False
        if status != verdict.status:
            counts[f"{status} → {verdict.status}"] += 1
            same = False
        if answer != verdict.answer:
            counts[ANSWER_CHANGED] += 1
            same = False
        if same:
            counts[UNCHANGED] += 1
    order = [TO_CORRECT, TO_INCORRECT]
    order += sorted(k for k in counts if "→" in k and k not in (TO_CORRECT, TO_INCORRECT))
    order += [ANSWER_CHANGED, UNCHANGED]
    return {k: counts[k] for k in order if counts[k]}


def reverify_run(
    run: str | Path,
    *,
    timeout_s: float = 5.0,
    force: bool = False,
    workers: int | None = None,
    verifier_options: dict[str, Any] | None = None,
) -> ReverifyResult:
    """Grade every stored sample of ``run`` again under the current rules (see the module docstring).

    ``verifier_options`` replace or add options of the rebuilt verifier (``rlbound reverify
    --judge-url/--judge-model``: the QA judge's server, which run.json does not record, or another
    judge model, whose verdicts then replace the run's).

    Holds the run's one-writer lock throughout: a run being sampled (or re-verified) elsewhere is
    refused with an error naming that process."""
    run = Path(run)
    read_meta(run)  # a missing run or a directory that is none is reported before it is locked
    if timeout_s <= 0:
        raise RlboundError(f"--timeout must be positive, got {timeout_s}")
    with lock_run(run):
        return _reverify_locked(run, timeout_s, force, workers, verifier_options)


def _reverify_locked(run: Path, timeout_s: float, force: bool, workers: int | None,
                     verifier_options: dict[str, Any] | None = None) -> ReverifyResult:
    meta = read_meta(run)  # read again under the lock
    config = meta.get("config") or {}
    verifier = _rebuild_verifier(meta, run, verifier_options)
    old, new = config.get("verifier") or {}, verifier_spec(verifier)
    record = meta.get("verdicts") or {}
    tag = record.get("current")
    file_missing = bool(tag) and not (run / VERDICT_DIR / f"{tag}.parquet").is_file()
    if old == new and not force and not file_missing:
        return ReverifyResult(run, "current", old, new)

    table = read_samples(run, ["problem_id", "sample_idx", "completion", "answer", "correct", "verify_status"],
                         original=file_missing, meta=meta)
    if file_missing:  # grade from the shards' own rows; they are all we still have
        tag = None
    rows = _first_rows(table)
    task = task_from_run(meta, run) if rows["problem_id"] else None
    references: dict[str, Any] = {p.id: verifier.reference_for(p) for p in task.problems} if task else {}
    unknown = sorted({pid for pid in rows["problem_id"] if pid not in references})
    if unknown:
        raise RlboundError(f"run '{run}': problem {unknown[0]!r} is not in its rebuilt task "
                           f"{config.get('task', {}).get('name')!r} (did the tasks file change?)")
    verdicts = verify_batch(
        verifier, [references[p] for p in rows["problem_id"]], [t or "" for t in rows["completion"]],
        timeout_s=timeout_s, workers=workers, cache=VerifyCache(), progress_label="re-verifying",
    ) if rows["problem_id"] else []
    changes = _count_changes(rows, verdicts)
    timeouts = sum(v.status == STATUS_TIMEOUT for v in verdicts)
    result = ReverifyResult(run, "written", old, new, len(verdicts), changes, timeouts)
    if old == new and not file_missing and result.changed == 0:
        result.outcome = "unchanged"
        return result

    new_tag = verdicts_tag(new)
    target = run / VERDICT_DIR / f"{new_tag}.parquet"
    target.parent.mkdir(exist_ok=True)
    out = pa.Table.from_pydict(
        {"problem_id": rows["problem_id"], "sample_idx": rows["sample_idx"],
         "answer": [v.answer for v in verdicts], "correct": [v.correct for v in verdicts],
         "verify_status": [v.status for v in verdicts],
         "correct_base": [v.correct_base for v in verdicts]},
        schema=VERDICT_SCHEMA,
    ).sort_by([("problem_id", "ascending"), ("sample_idx", "ascending")])
    atomic_write(target, lambda tmp: pq.write_table(out, tmp, compression="zstd"))
    files = list(record.get("files") or [])
    replaces = tag or "samples"
    for entry in [f for f in files if f.get("tag") == new_tag]:  # graded again under the same settings
        files.remove(entry)
        replaces = entry.get("replaces", replaces) if replaces == new_tag else replaces
    files.append({
        "tag": new_tag, "file": f"{VERDICT_DIR}/{target.name}", "verifier": new,
        "replaces": replaces, "created": _now(), "samples": len(verdicts),
        "changes": changes, "timeouts": timeouts, "timeout_s": timeout_s, "versions": package_versions(),
    })
    record = {"current": new_tag, "original": record.get("original", old), "files": files}
    meta["verdicts"] = record
    meta["config"] = {**config, "verifier": new}
    write_meta(run, meta)
    current_verdicts(run, meta)  # the file run.json points to is in place
    result.file = target
    return result


def describe(result: ReverifyResult) -> str:
    """One line saying what :func:`reverify_run` did, for the command line."""
    if result.outcome == "current":
        return (f"{result.path}: verdicts already current ({describe_verifier(result.new)}); "
                "nothing written")
    if result.outcome == "unchanged":
        return (f"{result.path}: {result.samples} samples graded again under {describe_verifier(result.new)}; "
                "no verdict changed, nothing written")
    return (f"{result.path}: {result.samples} samples re-graded under {describe_verifier(result.new)}, "
            f"graded before under {describe_verifier(result.old)}; {result.changed} changed")
