"""Scoring a stored run under another model: ``rlbound score --scorer MODEL RUN``.

:func:`score_run` computes, for every sample of run ``RUN``, the scoring model's per-token
log-probabilities of the completion given its prompt (``Engine.score``) and stores per sample the
number of tokens scored, their mean log-probability and the perplexity
(:func:`rlbound.analysis.perplexity.perplexity`) beside the run::

    RUN/scores/<label>.parquet   problem_id, sample_idx, n_tokens, mean_logprob, ppl
    RUN/scores/<label>.json      the scorer's identity (engine, model, weights digest), the prompt
                                 template, the definition, counts and versions

Prompts are rebuilt as the sampler built them: the task is rebuilt from ``run.json``
(:func:`task_from_run`) and each problem's question rendered with the run's template
(``PromptTemplate.render``, as ``rlbound.sampler`` does). A ``chat`` template is rendered with the
*scorer's* own chat format (the sampling engine is not loaded).

Resumable and idempotent: scored chunks go to ``scores/.<label>.partial/`` as atomic shards, and
the final Parquet file is rewritten atomically from everything scored once all samples are in.
Rerunning with the same scorer scores only samples that are missing (an interrupted run, or a
run topped up since); a different scorer under the same label is refused (pick ``label``).

One scorer per label: :func:`score_run` holds ``scores/.<label>.lock`` (:mod:`rlbound.runlock`)
while it writes, so a second ``rlbound score`` of the same label is refused with an error naming
the first. It does not take the run's own lock: it writes nothing the sampler or ``rlbound
reverify`` writes, so a run can be scored while it is being sampled (samples stored after the
scorer started are scored by the next call).

What it does not do: no statistics (``rlbound.analysis.perplexity``), no end-of-sequence token
(the engines score the completion's text tokens), no check that a file task's file is unchanged
beyond its problem ids and count.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlbound.analysis.perplexity import perplexity
from rlbound.atomic import atomic_write, atomic_write_text
from rlbound.engines.base import Engine, EngineInfo
from rlbound.errors import RlboundError
from rlbound.progress import progress
from rlbound.runlock import RunLock
from rlbound.store import SCORE_DIR, SCORE_SCHEMA, package_versions, read_meta, read_samples
from rlbound.tasks.base import Problem, Task, load_task
from rlbound.tasks.templates import get_template

SUBSET_OPTION = "problem_subset"
"""Task option (recorded in run.json) naming the problem ids of a subset task; see :func:`subset_task`."""

DEFINITION = ("ppl = exp(-mean over the completion's scored tokens of log P(y_t | x, y_<t)) under the "
              "scorer, natural logs; prompt x rendered with the run's template; no end-of-sequence token")


def task_from_run(meta: dict[str, Any], run: str | Path) -> Task:
    """Rebuild the task a run was sampled on from its ``run.json`` (task name and options)."""
    cfg = meta.get("config") or {}
    spec = cfg.get("task") or {}
    name = spec.get("name")
    if not name:
        raise RlboundError(f"run '{run}': run.json records no task")
    options = dict(spec.get("options") or {})
    subset = options.pop(SUBSET_OPTION, None)
    factory = "file" if str(name).startswith("file:") else str(name)
    try:
        task = load_task(factory, **options)
    except TypeError as exc:
        raise RlboundError(f"run '{run}': cannot rebuild its task {name!r} from run.json ({exc})") from None
    except RlboundError as exc:
        raise RlboundError(f"run '{run}': cannot rebuild its task {name!r} ({exc})") from None
    task = dataclasses.replace(task, name=str(name))
    if subset is not None:
        task = subset_task(task, subset)
    recorded = spec.get("problems")
    if recorded is not None and int(recorded) != len(task):
        raise RlboundError(f"run '{run}': its task {name!r} now has {len(task)} problems but was sampled "
                           f"with {recorded} (did the tasks file change?)")
    return task


def subset_task(task: Task, problem_ids: list[str]) -> Task:
    """``task`` restricted to ``problem_ids`` (in that order); the ids are recorded in its options,
    so :func:`task_from_run` rebuilds the same subset from a run sampled on it."""
    by_id = {p.id: p for p in task.problems}
    missing = [p for p in problem_ids if p not in by_id]
    if missing:
        raise RlboundError(f"task {task.name!r} has no problem {missing[0]!r}")
    problems = tuple(by_id[p] for p in problem_ids)
    return dataclasses.replace(task, problems=problems, options={**task.options, SUBSET_OPTION: list(problem_ids)})


def verifier_from_run(meta: dict[str, Any], overrides: dict[str, Any] | None = None):
    """The verifier a run was verified with, rebuilt from run.json (settings its constructor takes);
    ``overrides`` replace or add constructor options (the QA judge's URL, which run.json lacks)."""
    from rlbound.verify.base import load_verifier, verifier_options

    spec = (meta.get("config") or {}).get("verifier") or {}
    name = spec.get("name", "exact")
    accepted = verifier_options(name)
    options = {k: v for k, v in (spec.get("settings") or {}).items() if k in accepted}
    return load_verifier(name, **{**options, **(overrides or {})})


def _safe_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "scorer"


def default_label(info: EngineInfo) -> str:
    """A file-name-safe label for a scorer: its model directory's or hub name's last part."""
    name = Path(str(info.model).rstrip("/")).name or str(info.model)
    return _safe_label(name)


def scorer_identity(info: EngineInfo) -> dict[str, Any]:
    """What makes two scorers the same: engine, model, and the weights digest or commit if known."""
    ident = {"engine": info.engine, "model": str(info.model)}
    weights = info.details.get("weights_sha256") or info.details.get("commit")
    if weights:
        ident["weights"] = weights
    return ident


def _same_scorer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.get("engine") != b.get("engine"):
        return False
    if a.get("weights") and b.get("weights"):
        return a["weights"] == b["weights"]
    return a.get("model") == b.get("model") and a.get("weights") == b.get("weights")


@dataclass
class ScoreStats:
    """What one call of :func:`score_run` did."""

    path: Path
    label: str
    scored: int
    already_present: int


def _read_keys(files: list[Path]) -> set[tuple[str, int]]:
    keys: set[tuple[str, int]] = set()
    for f in files:
        t = pq.read_table(f, columns=["problem_id", "sample_idx"])
        keys.update(zip(t.column("problem_id").to_pylist(), t.column("sample_idx").to_pylist()))
    return keys


def score_run(
    run: str | Path,
    engine: Engine,
    *,
    label: str | None = None,
    chunk_samples: int | None = None,
) -> ScoreStats:
    """Score every sample of ``run`` under ``engine`` into ``RUN/scores/<label>.parquet`` (resumable)."""
    run = Path(run)
    meta = read_meta(run)
    info = engine.info()
    label = default_label(info) if label is None else label
    if _safe_label(label) != label:
        raise RlboundError(f"score label {label!r} must use only letters, digits, '.', '_' and '-' "
                           f"(e.g. {_safe_label(label)!r})")
    with RunLock(run / SCORE_DIR / f".{label}.lock", f"scores {label!r} of run '{run}' are"):
        return _score_locked(run, meta, engine, info, label, chunk_samples)


def _score_locked(run: Path, meta: dict[str, Any], engine: Engine, info: EngineInfo, label: str,
                  chunk_samples: int | None) -> ScoreStats:
    identity = scorer_identity(info)
    template_name = (meta.get("config") or {}).get("template")
    score_dir = run / SCORE_DIR
    final = score_dir / f"{label}.parquet"
    info_path = score_dir / f"{label}.json"
    partial = score_dir / f".{label}.partial"
    if info_path.is_file():
        old = json.loads(info_path.read_text())
        if not _same_scorer(old.get("identity") or {}, identity):
            raise RlboundError(
                f"run '{run}': scores {label!r} were made by another scorer ({json.dumps(old.get('identity'))}); "
                "pass --label NAME to store this scorer's under another name"
            )
    samples = read_samples(run, columns=["problem_id", "sample_idx", "completion"])
    if samples.num_rows == 0:
        raise RlboundError(f"run '{run}' holds no samples yet")
    pids = samples.column("problem_id").to_pylist()
    idxs = samples.column("sample_idx").to_pylist()
    texts = samples.column("completion").to_pylist()
    shards = sorted(partial.glob("part-*.parquet")) if partial.is_dir() else []
    done = _read_keys(([final] if final.is_file() else []) + shards)
    todo, seen = [], set()
    for pid, idx, text in zip(pids, idxs, texts):
        if (pid, idx) not in done and (pid, idx) not in seen:
            seen.add((pid, idx))
            todo.append((pid, idx, text or ""))
    already = len({(p, i) for p, i in zip(pids, idxs)}) - len(todo)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = {
        "format": 1, "label": label, "identity": identity,
        "scorer": {"engine": info.engine, "model": info.model, "details": info.details},
        "run": meta.get("label") or run.name, "template": template_name, "definition": DEFINITION,
        "created": now, "versions": package_versions(),
    }
    if info_path.is_file():
        record["created"] = json.loads(info_path.read_text()).get("created", now)
    score_dir.mkdir(exist_ok=True)
    if todo:
        atomic_write_text(info_path, json.dumps({**record, "complete": False}, indent=2) + "\n")
        task = task_from_run(meta, run)
        template = get_template(template_name or task.template)
        problems: dict[str, Problem] = {p.id: p for p in task.problems}
        unknown = sorted({pid for pid, _, _ in todo if pid not in problems})
        if unknown:
            raise RlboundError(f"run '{run}': problem {unknown[0]!r} is not in its rebuilt task "
                               f"{task.name!r} (did the tasks file change?)")
        if any(problems[pid].images for pid, _, _ in todo):  # engines score text prompts only
            raise RlboundError(f"run '{run}': its problems have images, and scoring takes text "
                               "prompts only (perplexity without the image would mislead)")
        prompts: dict[str, str] = {}
        if chunk_samples is None:
            chunk_samples = min(1024, max(64, 4 * int(getattr(engine, "batch_size", 64))))
        partial.mkdir(exist_ok=True)
        with progress("scoring", total=len(todo), unit="samples") as bar:
            if already:
                bar.set_postfix(f"{already} already scored")
            for start in range(0, len(todo), chunk_samples):
                chunk = todo[start : start + chunk_samples]
                for pid, _, _ in chunk:
                    if pid not in prompts:
                        prompts[pid] = template.render(problems[pid].prompt, engine)
                scores = engine.score([prompts[p] for p, _, _ in chunk], [t for _, _, t in chunk])
                rows = []
                for (pid, idx, _), sc in zip(chunk, scores):
                    lps = np.asarray(sc.token_logprobs, dtype=np.float64)
                    rows.append({"problem_id": pid, "sample_idx": idx, "n_tokens": int(lps.size),
                                 "mean_logprob": float(lps.mean()) if lps.size else None,
                                 "ppl": perplexity(lps) if lps.size else None})
                table = pa.Table.from_pylist(rows, schema=SCORE_SCHEMA)
                target = partial / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:6]}.parquet"
                atomic_write(target, lambda tmp, t=table: pq.write_table(t, tmp))
                bar.advance(len(chunk))
        shards = sorted(partial.glob("part-*.parquet"))
    if shards or not final.is_file():
        _consolidate(final, shards)
    if partial.is_dir():
        shutil.rmtree(partial)
    n_rows = pq.read_metadata(final).num_rows
    atomic_write_text(info_path, json.dumps({**record, "complete": True, "samples": n_rows,
                                             "updated": now}, indent=2) + "\n")
    return ScoreStats(final, label, len(todo), already)


def _consolidate(final: Path, shards: list[Path]) -> None:
    """Rewrite ``final`` from itself plus ``shards`` (one row per key, sorted), atomically."""
    tables = ([pq.read_table(final)] if final.is_file() else []) + [pq.read_table(s) for s in shards]
    table = pa.concat_tables(tables) if tables else SCORE_SCHEMA.empty_table()
    table = table.sort_by([("problem_id", "ascending"), ("sample_idx", "ascending")])
    pids = table.column("problem_id").to_pylist()
    idx = table.column("sample_idx").to_pylist()
    keep = [i for i in range(len(pids)) if i == 0 or (pids[i], idx[i]) != (pids[i - 1], idx[i - 1])]
    if len(keep) != len(pids):
        table = table.take(pa.array(keep, type=pa.int64()))
    atomic_write(final, lambda tmp: pq.write_table(table.cast(SCORE_SCHEMA), tmp, compression="zstd"))
