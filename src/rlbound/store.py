"""The run directory: ``run.json`` plus append-only Parquet shards of sample rows.

Layout::

    RUN/
      run.json                 task, model, engine, sampling parameters, seed, verifier, versions
      .lock                    the one-writer lock (rlbound.runlock); not data, readers ignore it
      samples/part-*.parquet   one row per (problem_id, sample_idx), written atomically
      scores/<label>.parquet   optional, by `rlbound score`: each sample's mean token log-prob and
      scores/<label>.json      PPL under one scoring model, and that scorer's identity
      verdicts/<tag>.parquet   optional, by `rlbound reverify`: every sample re-graded under newer
                               verifier rules (problem_id, sample_idx, answer, correct, verify_status)

Shards are written to a temporary file, fsynced and renamed into place, so a killed run leaves
only whole shards. A run is keyed by (problem_id, sample_idx): reopening a run directory with the
same configuration lets the sampler fill only the missing pairs (a larger ``n`` tops up); a
different configuration is refused with an error naming the differing field (and, when only the
verifier's rules or backend version differ, pointing to ``rlbound reverify``). Analyses read runs
through :func:`load_run` and never re-sample.

Verdicts: a shard row holds the verdict its sample got when it was sampled, and shards are never
rewritten. ``rlbound reverify`` (:mod:`rlbound.reverify`) writes re-graded verdicts *beside* them,
as ``verdicts/<tag>.parquet``, and records them in run.json::

    "config": {"verifier": {...}}        what grades the run now (new samples are graded by it)
    "verdicts": {"current": "<tag>",     the file whose verdicts are the run's verdicts
                 "original": {...},      the verifier the first samples were graded with
                 "files": [{"tag", "file", "verifier", "replaces", "created", "samples",
                            "changes", "timeouts", "timeout_s", "versions"}, ...]}

``files`` lists every verdicts file, oldest first; ``replaces`` names the tag whose verdicts it
superseded ("samples": the shards' own). ``original`` never changes once set.

:func:`read_samples` (and so ``load_run(...).table`` and ``.samples``, which every analysis and
the report read) returns each row with the current verdict file's ``answer``, ``correct`` and
``verify_status`` where that file has the row's key, and the shard's own otherwise (samples added
after the reverify, graded under ``config.verifier`` as they were written).
``read_samples(run, original=True)`` (``Run.original_table``) returns the rows as the sampler
wrote them. Runs without a "verdicts" entry read exactly as before.

One writer at a time: :class:`RunWriter` holds the run's lock (``RUN/.lock``,
:mod:`rlbound.runlock`) from opening the run until it is closed, and ``rlbound reverify`` takes
the same lock. Readers never lock, and ignore the lock file.

What this module does not do: it never deletes superseded verdict files.
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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rlbound.analysis.perplexity import SampleScores
from rlbound.analysis.samples import RunSamples
from rlbound.atomic import atomic_write, atomic_write_text
from rlbound.errors import RlboundError
from rlbound.runlock import LOCK_FILE, lock_run

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
        ("correct_base", pa.bool_()),
    ]
)
"""``correct_base``: the verdict on the base subset of the tests, for benchmarks that have one
(HumanEval+/MBPP+: the original tests; stdin/stdout tasks: the public tests), null elsewhere.
In a run where any row has one, a null (no program extracted) counts as incorrect. Shards
written before the column existed read with it null."""

VERDICT_DIR = "verdicts"
VERDICT_COLUMNS = ("answer", "correct", "verify_status", "correct_base")
VERDICT_SCHEMA = pa.schema(
    [("problem_id", pa.string()), ("sample_idx", pa.int32())]
    + [SAMPLE_SCHEMA.field(c) for c in VERDICT_COLUMNS]
)
"""Rows of ``verdicts/<tag>.parquet`` (written by :mod:`rlbound.reverify`)."""

# Fields of a verifier's settings that name the version of its rules or of its backend library
# rather than an option a user chose: runs differing only there (or in settings a newer rlbound
# added) can be re-graded in place by `rlbound reverify`. ``rubric``: the QA judge's rubric version.
GRADING_VERSION_FIELDS = ("rules", "backend", "rubric")

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
CONFIG_FIELDS = ("task", "template", "engine", "model", "dtype", "sampling", "seed", "verifier")


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


def describe_verifier(spec: dict[str, Any] | None) -> str:
    """A verifier spec (run.json's ``config.verifier``) in words: 'math rules 2 (math-verify 0.9.0)'.

    Runs recorded before rules were versioned carry no "rules" setting: those are rules 1.
    """
    spec = spec or {}
    settings = spec.get("settings") or {}
    text = f"{spec.get('name', '?')} rules {settings.get('rules', 1)}"
    return text + (f" ({settings['backend']})" if settings.get("backend") else "")


def _options_only(stored: dict, current: dict) -> tuple[dict, dict]:
    """Both configs without what only versions the grading: the verifier's ``rules`` and
    ``backend``, and settings one side lacks (options added or dropped by a newer rlbound)."""
    stored, current = json.loads(json.dumps(stored)), json.loads(json.dumps(current))
    a = (stored.get("verifier") or {}).get("settings")
    b = (current.get("verifier") or {}).get("settings")
    if isinstance(a, dict) and isinstance(b, dict):
        for key in (set(a) ^ set(b)) | set(GRADING_VERSION_FIELDS):
            a.pop(key, None)
            b.pop(key, None)
    return stored, current


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


def _adopt_dtype(stored: dict, current: dict) -> None:
    """A run recorded before rlbound kept the engine's number format takes the one it ran in:
    float32 for the tiny engine (it had no other), else the current one (not recorded then)."""
    if "dtype" not in stored:
        stored["dtype"] = "float32" if stored.get("engine") == "tiny" else current.get("dtype")


def _adopt_problems_digest(stored: dict, current: dict) -> None:
    """A run recorded before rlbound kept the problems' sha256 takes the current one (its task
    options and problem count are still compared)."""
    task, now = stored.get("task"), current.get("task") or {}
    if isinstance(task, dict) and "sha256" not in task and "sha256" in now:
        task["sha256"] = now["sha256"]


def check_same_problems(runs: list[tuple[str, dict[str, Any]]]) -> None:
    """Refuse to compare runs on the same task whose problems differ.

    ``runs`` are (label, run.json) pairs. Runs whose ``config.task.name`` is equal must hold the
    same problems' sha256 (runs recorded before rlbound kept it are not checked).
    """
    first: dict[str, tuple[str, str]] = {}
    for label, meta in runs:
        task = (meta.get("config") or {}).get("task") or {}
        name, digest = task.get("name"), task.get("sha256")
        if not name or not digest:
            continue
        if name in first and first[name][1] != digest:
            other, theirs = first[name]
            raise RlboundError(
                f"runs {other!r} and {label!r} are both on task {name!r} but hold different problems "
                f"(sha256 {theirs[:12]} vs {digest[:12]}): another file or revision of the benchmark; "
                "compare runs sampled on the same problems"
            )
        first.setdefault(name, (label, digest))


class RunWriter:
    """Opens (or creates) a run directory for sampling and appends shards to it.

    Holds the run's one-writer lock (:func:`rlbound.runlock.lock_run`) from construction until
    :meth:`close`; use it as a context manager. A second writer of the same run is refused with
    an error naming the holder.
    """

    def __init__(self, path: str | Path, config: dict[str, Any], n: int, label: str | None = None):
        self.path = Path(path)
        self.config = {k: config.get(k) for k in CONFIG_FIELDS}
        if not (self.path / RUN_FILE).exists():  # checked before a lock file is put in it
            _refuse_foreign_directory(self.path, probe_lock=True)
        self._lock = lock_run(self.path)
        try:
            self._open(n, label)
        except BaseException:
            self.close()
            raise

    def _open(self, n: int, label: str | None) -> None:
        meta_path = self.path / RUN_FILE
        if meta_path.exists():
            meta = read_meta(self.path)
            stored = meta.get("config", {})
            _adopt_problems_digest(stored, self.config)
            _adopt_dtype(stored, self.config)
            # A difference in options is named first; one only in rules versions can be re-graded.
            diff = config_difference(*_options_only(stored, self.config))
            if diff is None and config_difference(stored, self.config) is not None:
                raise RlboundError(
                    f"run '{self.path}' was graded under other verifier rules (the run has "
                    f"{describe_verifier(stored.get('verifier'))}, this rlbound grades with "
                    f"{describe_verifier(self.config.get('verifier'))}); run `rlbound reverify {self.path}` "
                    "first to re-grade its stored samples, then rerun this command"
                )
            if diff:
                raise RlboundError(
                    f"run '{self.path}' was made with other settings ({diff}); "
                    + (f"pass -E dtype={stored['dtype']} to resume it, or use another --out directory"
                       if diff.startswith("dtype:") and stored.get("dtype") else
                       "use another --out directory or the run's own settings")
                )
            self.meta = meta
            self.meta["n"] = max(int(meta.get("n", 0)), n)
            if label:
                self.meta["label"] = label
        else:
            _refuse_foreign_directory(self.path)
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self.meta = {
                "format": RUN_FORMAT,
                "label": label or self.path.name,
                "created": now,
                "config": self.config,
                "n": n,
                "versions": package_versions(),
            }
        self.save_meta()
        (self.path / SHARD_DIR).mkdir(exist_ok=True)

    def close(self) -> None:
        """Release the run's lock (idempotent); the writer must not be used afterwards."""
        self._lock.release()

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def save_meta(self, **updates: Any) -> None:
        self.meta.update(updates)
        write_meta(self.path, self.meta)

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


def _refuse_foreign_directory(path: Path, probe_lock: bool = False) -> None:
    """Raise if ``path`` holds anything (other than a run lock) but is not a run directory.

    ``probe_lock``: when it does, and a lock file is there, first try the lock, so that a writer
    creating the run at this moment is named rather than its half-made directory refused."""
    if path.exists() and not path.is_dir():
        raise RlboundError(f"'{path}' exists and is not a directory")
    if path.is_dir() and any(entry.name != LOCK_FILE for entry in path.iterdir()):
        if probe_lock and (path / LOCK_FILE).is_file():
            lock_run(path).release()
        raise RlboundError(f"'{path}' exists and is not a run directory (no {RUN_FILE})")


def write_meta(path: str | Path, meta: dict[str, Any]) -> None:
    """Replace a run's run.json with ``meta`` (atomically), stamping ``updated``."""
    meta["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(Path(path) / RUN_FILE, json.dumps(meta, indent=2, sort_keys=False) + "\n")


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


def current_verdicts(path: str | Path, meta: dict[str, Any] | None = None) -> Path | None:
    """The run's current verdicts file (``verdicts/<tag>.parquet``), or None when the shards'
    own verdicts are current (no ``rlbound reverify`` yet)."""
    run = Path(path)
    if meta is None:
        meta = read_meta(run) if (run / RUN_FILE).is_file() else {}
    tag = (meta.get("verdicts") or {}).get("current")
    if not tag:
        return None
    file = run / VERDICT_DIR / f"{tag}.parquet"
    if not file.is_file():
        raise RlboundError(
            f"run '{run}': its current verdicts {VERDICT_DIR}/{file.name} are missing; "
            f"run `rlbound reverify {run}` to grade its samples again"
        )
    return file


def read_samples(
    path: str | Path,
    columns: Iterable[str] | None = None,
    *,
    original: bool = False,
    meta: dict[str, Any] | None = None,
) -> pa.Table:
    """All sample rows of a run, as one table (``Run.samples`` drops repeated keys, if any).

    ``answer``, ``correct`` and ``verify_status`` are the run's current verdicts (see the module
    docstring); ``original=True`` returns the rows exactly as the shards hold them. ``meta`` is
    the run's run.json if the caller has already read it.
    """
    shard_dir = Path(path) / SHARD_DIR
    files = sorted(shard_dir.glob("part-*.parquet")) if shard_dir.is_dir() else []
    cols = list(columns) if columns else None
    if not files:
        schema = SAMPLE_SCHEMA if cols is None else pa.schema([SAMPLE_SCHEMA.field(c) for c in cols])
        return schema.empty_table()
    overlay = None
    if not original and (cols is None or any(c in VERDICT_COLUMNS for c in cols)):
        overlay = current_verdicts(path, meta)
    read_cols = cols
    if overlay is not None and cols is not None:
        read_cols = list(dict.fromkeys(["problem_id", "sample_idx", *cols]))
    table = pa.concat_tables([_read_aligned(f, read_cols) for f in files])
    if overlay is not None:
        table = _apply_verdicts(table, overlay)
        if cols is not None:
            table = table.select(cols)
    return table


def _read_aligned(file: Path, cols: list[str] | None, schema: pa.Schema = SAMPLE_SCHEMA) -> pa.Table:
    """One Parquet file's ``cols`` (default: all of ``schema``), with the columns it predates null."""
    names = list(cols) if cols is not None else schema.names
    present = set(pq.read_schema(file).names)
    table = pq.read_table(file, columns=[c for c in names if c in present])
    for c in names:
        if c not in present:
            table = table.append_column(schema.field(c), pa.nulls(table.num_rows, schema.field(c).type))
    return table.select(names)


def _apply_verdicts(table: pa.Table, file: Path) -> pa.Table:
    """``table`` with its verdict columns taken from ``file`` wherever ``file`` has the row's key."""
    wanted = [c for c in VERDICT_COLUMNS if c in table.column_names]
    if not wanted or table.num_rows == 0:
        return table
    keys = ["problem_id", "sample_idx"]
    verdicts = _read_aligned(file, [*keys, *wanted], VERDICT_SCHEMA)
    verdicts = verdicts.rename_columns([*keys, *(f"__new_{c}" for c in wanted)])
    verdicts = verdicts.append_column("__has", pa.array(np.ones(verdicts.num_rows, dtype=bool)))
    left = table.select(keys).append_column("__row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    joined = left.join(verdicts, keys=keys, join_type="left outer", use_threads=False).sort_by("__row")
    has = pc.fill_null(joined.column("__has"), False)
    for c in wanted:
        merged = pc.if_else(has, joined.column(f"__new_{c}"), table.column(c))
        table = table.set_column(table.schema.get_field_index(c), table.schema.field(c), merged)
    return table


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
        """Every sample row, with the run's current verdicts (see the module docstring)."""
        return read_samples(self.path, meta=self.meta)

    @cached_property
    def original_table(self) -> pa.Table:
        """Every sample row as the sampler wrote it (the verdicts it got when it was sampled)."""
        return read_samples(self.path, original=True)

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
        base_col = table.column("correct_base")
        has_base = base_col.null_count < table.num_rows
        base = pc.fill_null(base_col, False).to_numpy(zero_copy_only=False).astype(bool) if has_base else None
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
            correct_base=[base[order[p]] for p in ids] if base is not None else [],
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
