"""The run directory: ``run.json`` plus append-only Parquet shards of sample rows.

Layout::

    RUN/
      run.json                 task, model, engine, sampling parameters, seed, verifier, versions
      samples/part-*.parquet   one row per (problem_id, sample_idx), written atomically
      scores/<label>.parquet   optional, by `rlbound score`: each sample's mean token log-prob and
      scores/<label>.json      PPL under one scoring model, and that scorer's identity

Shards are written to a temporary file, fsynced and renamed into place, so a killed run leaves
only whole shards. A run is keyed by (problem_id, sample_idx): reopening a run directory with the
same configuration lets the sampler fill only the missing pairs (a larger ``n`` tops up); a
different configuration is refused with an error naming the differing field. Analyses read runs
through :func:`load_run` and never re-sample.
"""

from __future__ import annotations

import json
import platform
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlbound.analysis.perplexity import SampleScores
from rlbound.analysis.samples import RunSamples
from rlbound.atomic import atomic_write, atomic_write_text
from rlbound.errors import RlboundError

RUN_FORMAT = 1
RUN_FILE = "run.json"
SHARD_DIR = "samples"

SAMPLE_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),
        ("sample_idx", pa.int32()),
        ("seed", pa.int64()),
        ("completion", pa.string()),
        ("token_count", pa.int32()),
        ("finish_reason", pa.string()),
        ("logprob_sum", pa.float64()),
        ("logprob_mean", pa.float64()),
        ("entropy_mean", pa.float64()),
        ("answer", pa.string()),
        ("correct", pa.bool_()),
        ("verify_status", pa.string()),
    ]
)

SCORE_DIR = "scores"
SCORE_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),
        ("sample_idx", pa.int32()),
        ("n_tokens", pa.int32()),
        ("mean_logprob", pa.float64()),
        ("ppl", pa.float64()),
    ]
)
"""Rows of ``scores/<label>.parquet`` (written by :mod:`rlbound.scoring`)."""

# Fields of run.json's "config" that must match for a run to be resumed or extended.
CONFIG_FIELDS = ("task", "template", "engine", "model", "sampling", "seed", "verifier")


def package_versions() -> dict[str, str]:
    """Versions of Python and the libraries that can change samples or verdicts."""
    versions = {"python": platform.python_version()}
    for dist in ("rlbound", "torch", "transformers", "math-verify", "numpy", "pyarrow", "vllm"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _describe(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)


def config_difference(old: dict, new: dict, prefix: str = "") -> str | None:
    """The first differing field between two configs, as 'field: old vs new', or None."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diff = config_difference(a, b, f"{prefix}{key}.")
            if diff:
                return diff
        elif a != b:
            return f"{prefix}{key}: the run has {_describe(a)}, this command asks {_describe(b)}"
    return None


class RunWriter:
    """Opens (or creates) a run directory for sampling and appends shards to it."""

    def __init__(self, path: str | Path, config: dict[str, Any], n: int, label: str | None = None):
        self.path = Path(path)
        self.config = {k: config[k] for k in CONFIG_FIELDS}
        meta_path = self.path / RUN_FILE
        if meta_path.exists():
            meta = read_meta(self.path)
            diff = config_difference(meta.get("config", {}), self.config)
            if diff:
                raise RlboundError(
                    f"run '{self.path}' was made with other settings ({diff}); "
                    "use another --out directory or the run's own settings"
                )
            self.meta = meta
            self.meta["n"] = max(int(meta.get("n", 0)), n)
            if label:
                self.meta["label"] = label
        else:
            if self.path.exists() and any(self.path.iterdir()):
                raise RlboundError(f"'{self.path}' exists and is not a run directory (no run.json)")
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self.meta = {
                "format": RUN_FORMAT,
                "label": label or self.path.name,
                "created": now,
                "config": self.config,
                "n": n,
                "versions": package_versions(),
            }
        (self.path / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self.save_meta()

    def save_meta(self, **updates: Any) -> None:
        self.meta.update(updates)
        self.meta["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        text = json.dumps(self.meta, indent=2, sort_keys=False) + "\n"
        atomic_write_text(self.path / RUN_FILE, text)

    def existing_keys(self) -> set[tuple[str, int]]:
        """The (problem_id, sample_idx) pairs already stored."""
        table = read_samples(self.path, columns=["problem_id", "sample_idx"])
        return set(zip(table.column("problem_id").to_pylist(), table.column("sample_idx").to_pylist()))

    def write_shard(self, rows: list[dict[str, Any]]) -> Path:
        """Append rows (dicts with the SAMPLE_SCHEMA fields) as one atomic shard."""
        table = pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:6]}.parquet"
        target = self.path / SHARD_DIR / name
        atomic_write(target, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
        return target


def read_meta(path: str | Path) -> dict[str, Any]:
    """The run.json of a run directory, with a clear error when it is not one."""
    run = Path(path)
    meta_path = run / RUN_FILE
    if not run.exists():
        raise RlboundError(f"run '{run}' not found")
    if not meta_path.is_file():
        raise RlboundError(f"'{run}' is not a run directory (no {RUN_FILE})")
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise RlboundError(f"run '{run}': {RUN_FILE} is not valid JSON ({exc.msg})") from None


def read_samples(path: str | Path, columns: Iterable[str] | None = None) -> pa.Table:
    """All sample rows of a run (one table; duplicates of a key, if any, keep the first)."""
    shard_dir = Path(path) / SHARD_DIR
    files = sorted(shard_dir.glob("part-*.parquet")) if shard_dir.is_dir() else []
    cols = list(columns) if columns else None
    if not files:
        schema = SAMPLE_SCHEMA if cols is None else pa.schema([SAMPLE_SCHEMA.field(c) for c in cols])
        return schema.empty_table()
    tables = [pq.read_table(f, columns=cols) for f in files]
    return pa.concat_tables(tables)


@dataclass
class Run:
    """A stored run: its ``meta`` (run.json), its rows (``table``) and per-problem ``samples``."""

    path: Path
    meta: dict[str, Any]

    @property
    def label(self) -> str:
        return str(self.meta.get("label") or self.path.name)

    @cached_property
    def table(self) -> pa.Table:
        return read_samples(self.path)

    @cached_property
    def samples(self) -> RunSamples:
        """Rows grouped per problem in sample-index order (problems sorted by id)."""
        table = self.table.sort_by([("problem_id", "ascending"), ("sample_idx", "ascending")])
        pids = table.column("problem_id").to_pylist()
        idx = np.asarray(table.column("sample_idx").to_numpy(zero_copy_only=False))
        keep = np.ones(len(pids), dtype=bool)
        if len(pids) > 1:  # drop repeated keys (never written by the sampler, but be safe)
            same = (np.array(pids[1:], dtype=object) == np.array(pids[:-1], dtype=object)) & (
                idx[1:] == idx[:-1]
            )
            keep[1:] = ~same
        correct = table.column("correct").to_numpy(zero_copy_only=False).astype(bool)
        tokens = table.column("token_count").to_numpy(zero_copy_only=False)
        entropy = table.column("entropy_mean").to_numpy(zero_copy_only=False).astype(float)
        answers = table.column("answer").to_pylist()
        statuses = table.column("verify_status").to_pylist()
        texts = table.column("completion").to_pylist()
        order: dict[str, list[int]] = {}
        for i, pid in enumerate(pids):
            if keep[i]:
                order.setdefault(pid, []).append(i)
        ids = list(order)
        return RunSamples(
            label=self.label,
            problem_ids=ids,
            correct=[correct[order[p]] for p in ids],
            answers=[[answers[i] for i in order[p]] for p in ids],
            token_counts=[tokens[order[p]] for p in ids],
            entropy_means=[entropy[order[p]] for p in ids],
            statuses=[[statuses[i] for i in order[p]] for p in ids],
            meta=self.meta,
            texts=[[texts[i] or "" for i in order[p]] for p in ids],
        )

    @cached_property
    def scores(self) -> list[SampleScores]:
        """The run's samples scored by other models (``rlbound score``), one entry per score file."""
        return read_scores(self.path, self.label)


def read_scores(path: str | Path, run_label: str) -> list[SampleScores]:
    """Every complete score file of a run (``scores/<label>.parquet``), sorted by label, grouped
    per problem (problems sorted by id, samples by index); its ``.json`` becomes ``scorer``."""
    score_dir = Path(path) / SCORE_DIR
    found = []
    for file in sorted(score_dir.glob("*.parquet")) if score_dir.is_dir() else []:
        if file.name.startswith("."):
            continue
        info_path = file.with_suffix(".json")
        try:
            info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        except json.JSONDecodeError as exc:
            raise RlboundError(f"run '{path}': {info_path.name} is not valid JSON ({exc.msg})") from None
        table = pq.read_table(file).sort_by([("problem_id", "ascending"), ("sample_idx", "ascending")])
        pids = table.column("problem_id").to_pylist()
        cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in ("sample_idx", "n_tokens", "mean_logprob")}
        order: dict[str, list[int]] = {}
        for i, pid in enumerate(pids):
            order.setdefault(pid, []).append(i)
        ids = list(order)
        found.append(SampleScores(
            run_label=run_label, scorer_label=file.stem, problem_ids=ids,
            mean_logprobs=[cols["mean_logprob"][order[p]].astype(float) for p in ids],
            n_tokens=[cols["n_tokens"][order[p]] for p in ids],
            sample_idx=[cols["sample_idx"][order[p]] for p in ids],
            scorer=info,
        ))
    return found


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Open a run directory for reading (``label`` overrides the one in run.json)."""
    meta = read_meta(path)
    if label:
        meta = {**meta, "label": label}
    return Run(Path(path), meta)
