"""The run store and the resumable sampler (with a deterministic stand-in engine)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from rlbound.engines.base import Engine, EngineInfo, Sample, SamplingParams, TokenScores, sample_seed
from rlbound.errors import RlboundError
from rlbound.sampler import sample_run
from rlbound.store import SAMPLE_SCHEMA, load_run, read_samples
from rlbound.tasks.base import load_task
from rlbound.verify.base import load_verifier


class SeedEchoEngine(Engine):
    """Answers ``seed % 3``: deterministic per sample seed, so resumed runs can be checked."""

    name = "seed-echo"

    def __init__(self):
        self.calls = 0

    def generate(self, prompts, params, seeds):
        self.calls += 1
        return [
            [Sample(f"step\n#### {s % 3}", [1, 2, 3], "stop", [-0.5, -0.25, -0.25], [1.0, 0.5, 0.0]) for s in row]
            for row in seeds
        ]

    def score(self, prompts, completions):
        return [TokenScores([1], [-1.0]) for _ in completions]

    def info(self):
        return EngineInfo("seed-echo", "none")


def _run(tmp_path, n, engine=None, task=None, **kw):
    task = task or load_task("arithmetic", n=6, seed=0, difficulty=1)
    return sample_run(
        tmp_path / "run", task, engine or SeedEchoEngine(), load_verifier("exact"),
        kw.pop("params", SamplingParams(max_tokens=8)), n, shard_samples=kw.pop("chunk", 5), **kw,
    )


def test_rows_meta_and_schema(tmp_path):
    stats = _run(tmp_path, n=4, seed=7)
    assert stats.sampled == 24 and stats.already_present == 0
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["n"] == 4 and meta["config"]["seed"] == 7 and meta["samples"] == 24
    assert meta["config"]["sampling"]["max_tokens"] == 8
    assert "python" in meta["versions"] and "pyarrow" in meta["versions"]
    table = read_samples(tmp_path / "run")
    assert table.schema.equals(SAMPLE_SCHEMA)
    rows = table.to_pylist()
    assert len(rows) == 24
    task = load_task("arithmetic", n=6, seed=0, difficulty=1)
    refs = {p.id: p.reference for p in task.problems}
    for row in rows:
        assert row["seed"] == sample_seed(7, row["problem_id"], row["sample_idx"])
        assert row["answer"] == str(row["seed"] % 3)
        assert row["correct"] == (row["answer"] == refs[row["problem_id"]])
        assert row["verify_status"] == "ok"
        assert row["logprob_sum"] == pytest.approx(-1.0) and row["entropy_mean"] == pytest.approx(0.5)
    # Shards are whole Parquet files, several of them (chunk of 5 samples).
    shards = list((tmp_path / "run" / "samples").glob("part-*.parquet"))
    assert len(shards) == 5 and all(pq.read_table(s).num_rows <= 5 for s in shards)


def test_top_up_adds_only_missing_and_keeps_first_samples(tmp_path):
    _run(tmp_path, n=3)
    before = {(r["problem_id"], r["sample_idx"]): r["completion"] for r in read_samples(tmp_path / "run").to_pylist()}
    stats = _run(tmp_path, n=5)
    assert stats.sampled == 12 and stats.already_present == 18
    rows = read_samples(tmp_path / "run").to_pylist()
    keys = [(r["problem_id"], r["sample_idx"]) for r in rows]
    assert len(keys) == len(set(keys)) == 30
    after = {(r["problem_id"], r["sample_idx"]): r["completion"] for r in rows}
    assert all(after[k] == v for k, v in before.items())
    engine = SeedEchoEngine()
    assert _run(tmp_path, n=5, engine=engine).sampled == 0 and engine.calls == 0


def test_resume_with_other_settings_is_refused_naming_the_field(tmp_path):
    _run(tmp_path, n=2)
    with pytest.raises(RlboundError, match="temperature: the run has 1.0, this command asks 0.7"):
        _run(tmp_path, n=2, params=SamplingParams(max_tokens=8, temperature=0.7))
    with pytest.raises(RlboundError, match="seed"):
        _run(tmp_path, n=2, seed=1)
    other = load_task("arithmetic", n=6, seed=0, difficulty=2)
    with pytest.raises(RlboundError, match="task.options.difficulty"):
        _run(tmp_path, n=2, task=other)


def test_load_run_groups_samples_by_problem(tmp_path):
    _run(tmp_path, n=4, label="base")
    run = load_run(tmp_path / "run")
    samples = run.samples
    assert run.label == samples.label == "base"
    assert len(samples) == 6 and list(samples.n) == [4] * 6
    for pid, correct, answers in zip(samples.problem_ids, samples.correct, samples.answers):
        rows = sorted(
            (r for r in run.table.to_pylist() if r["problem_id"] == pid), key=lambda r: r["sample_idx"]
        )
        assert [r["answer"] for r in rows] == answers
        assert list(correct) == [r["correct"] for r in rows]
    assert int(samples.c.sum()) == sum(r["correct"] for r in run.table.to_pylist())


def test_not_a_run_directory(tmp_path):
    with pytest.raises(RlboundError, match="not found"):
        load_run(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(RlboundError, match="not a run directory"):
        load_run(tmp_path / "junk")
    with pytest.raises(RlboundError, match="not a run directory"):
        sample_run(
            tmp_path / "junk", load_task("arithmetic", n=1), SeedEchoEngine(),
            load_verifier("exact"), SamplingParams(), 1,
        )
