"""`rlbound reverify`: stored samples re-graded under the current rules, beside the shards."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rlbound.engines.base import SamplingParams
from rlbound.errors import RlboundError
from rlbound.reverify import ANSWER_CHANGED, TO_CORRECT, TO_INCORRECT, UNCHANGED, reverify_run
from rlbound.sampler import sample_run
from rlbound.store import RUN_FILE, SAMPLE_SCHEMA, load_run, read_samples
from rlbound.tasks.base import load_task
from rlbound.verify.base import load_verifier
from rlbound.verify.extract import RULES_VERSION
from rlbound.verify.pool import verify_batch
from tests.test_cli import assert_one_line_error, rlbound
from tests.test_store import SeedEchoEngine

ANSWERS = ["0", "1", "2", "1"]


def _task(tmp_path: Path, answers=ANSWERS, verifier: str = "exact"):
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"q{i}", "answer": a}) + "\n"
                            for i, a in enumerate(answers)))
    return load_task("file", path=str(path), verifier=verifier)


def _sample(tmp_path: Path, n: int):
    task = _task(tmp_path)
    return sample_run(tmp_path / "run", task, SeedEchoEngine(), load_verifier(task.verifier),
                      SamplingParams(max_tokens=8), n, template="raw", shard_samples=7)


def _make_stale(run: Path, rows: list[dict], drop=("rules",)) -> None:
    """Turn ``run`` into one graded under rules 1: run.json without the rules version, and its
    shards replaced by one holding ``rows`` (the verdicts the old rules gave)."""
    meta = json.loads((run / RUN_FILE).read_text())
    for key in drop:
        meta["config"]["verifier"]["settings"].pop(key, None)
    (run / RUN_FILE).write_text(json.dumps(meta, indent=2))
    for shard in (run / "samples").glob("part-*.parquet"):
        shard.unlink()
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), run / "samples" / "part-0001.parquet")


def _stale_run(tmp_path: Path) -> tuple[Path, list[dict], dict[str, int]]:
    """A real run (4 problems x 6 samples, exact verifier) whose stored verdicts were flipped as
    an older rule set might have graded them; returns it, the true rows and the expected counts."""
    _sample(tmp_path, n=6)
    run = tmp_path / "run"
    truth = sorted(read_samples(run).to_pylist(), key=lambda r: (r["problem_id"], r["sample_idx"]))
    right = [r for r in truth if r["correct"]]
    wrong = [r for r in truth if not r["correct"]]
    assert len(right) >= 3 and len(wrong) >= 4, "the seeds should give both kinds"
    stale = {(r["problem_id"], r["sample_idx"]): dict(r) for r in truth}
    for r in right[:2]:  # wrongly rejected by the old rules
        stale[(r["problem_id"], r["sample_idx"])]["correct"] = False
    for r in wrong[:3]:  # wrongly accepted
        stale[(r["problem_id"], r["sample_idx"])]["correct"] = True
    r = wrong[3]  # the old rules found no answer
    stale[(r["problem_id"], r["sample_idx"])].update(answer=None, verify_status="no_answer")
    r = right[2]  # the old rules extracted it differently, same verdict
    stale[(r["problem_id"], r["sample_idx"])]["answer"] = r["answer"] + " "
    _make_stale(run, list(stale.values()))
    expected = {TO_CORRECT: 2, TO_INCORRECT: 3, "no_answer → ok": 1, ANSWER_CHANGED: 2,
                UNCHANGED: len(truth) - 7}
    return run, truth, expected


def _files(run: Path, sub: str = "samples") -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / sub).iterdir())}


def _verdicts(table) -> list[tuple]:
    rows = sorted(table.to_pylist(), key=lambda r: (r["problem_id"], r["sample_idx"]))
    return [(r["problem_id"], r["sample_idx"], r["answer"], r["correct"], r["verify_status"]) for r in rows]


def test_reverify_writes_new_verdicts_beside_untouched_shards(tmp_path):
    run, truth, expected = _stale_run(tmp_path)
    stale_table = read_samples(run)
    shards = _files(run)
    result = reverify_run(run)
    assert result.outcome == "written" and result.samples == len(truth)
    assert result.changes == expected and result.changed == 7

    assert _files(run) == shards, "samples/ shards are never modified"
    # Every reader sees the new verdicts: they equal the ones a fresh run gets under these rules.
    loaded = load_run(run)
    assert _verdicts(loaded.table) == _verdicts(pq.read_table(result.file)) == [
        (r["problem_id"], r["sample_idx"], r["answer"], r["correct"], r["verify_status"]) for r in truth
    ]
    samples = loaded.samples
    assert int(samples.c.sum()) == sum(r["correct"] for r in truth)
    # The original rows stay readable.
    assert _verdicts(read_samples(run, original=True)) == _verdicts(stale_table)
    assert _verdicts(loaded.original_table) == _verdicts(stale_table)
    assert read_samples(run, ["correct"]).column("correct").to_pylist() == loaded.table.column("correct").to_pylist()

    meta = json.loads((run / RUN_FILE).read_text())
    settings = meta["config"]["verifier"]["settings"]
    assert settings["rules"] == RULES_VERSION
    record = meta["verdicts"]
    assert "rules" not in record["original"]["settings"], "the original verifier stays visible"
    (entry,) = record["files"]
    assert record["current"] == entry["tag"] and (run / entry["file"]) == result.file
    assert entry["changes"] == expected and entry["replaces"] == "samples"
    assert entry["verifier"] == meta["config"]["verifier"]

    # A second reverify finds the run current and writes nothing at all.
    before = {**_files(run), **_files(run, "verdicts"), RUN_FILE: (run / RUN_FILE).read_bytes()}
    again = reverify_run(run)
    assert again.outcome == "current" and again.file is None
    assert {**_files(run), **_files(run, "verdicts"), RUN_FILE: (run / RUN_FILE).read_bytes()} == before
    # Forced, it grades again; no verdict changes, so still nothing is written.
    forced = reverify_run(run, force=True)
    assert forced.outcome == "unchanged" and forced.changes == {UNCHANGED: len(truth)}
    assert {**_files(run), **_files(run, "verdicts"), RUN_FILE: (run / RUN_FILE).read_bytes()} == before


def test_top_up_needs_reverify_first_then_grades_new_samples_under_the_same_rules(tmp_path):
    run, truth, _ = _stale_run(tmp_path)
    with pytest.raises(RlboundError, match=r"graded under other verifier rules .*rules 1.*rules "
                                           rf"{RULES_VERSION}.*rlbound reverify"):
        _sample(tmp_path, n=9)
    reverify_run(run)
    stats = _sample(tmp_path, n=9)
    assert stats.sampled == 4 * 3 and stats.already_present == len(truth)
    table = load_run(run).table
    assert table.num_rows == 4 * 9
    # Old and new samples alike carry the verdicts of the current rules.
    task = _task(tmp_path)
    refs = {p.id: p.reference for p in task.problems}
    rows = table.to_pylist()
    fresh = verify_batch("exact", [refs[r["problem_id"]] for r in rows], [r["completion"] for r in rows])
    assert [(r["answer"], r["correct"], r["verify_status"]) for r in rows] == [
        (v.answer, v.correct, v.status) for v in fresh
    ]
    assert reverify_run(run).outcome == "current"


def test_resume_with_other_verifier_options_is_still_refused_by_name(tmp_path):
    run, _, _ = _stale_run(tmp_path)
    meta = json.loads((run / RUN_FILE).read_text())
    meta["config"]["verifier"]["settings"]["case_sensitive"] = False
    (run / RUN_FILE).write_text(json.dumps(meta))
    with pytest.raises(RlboundError, match="case_sensitive: the run has False") as err:
        _sample(tmp_path, n=9)
    assert "reverify" not in str(err.value)


def test_reverify_command_on_a_math_run(tmp_path):
    """Through the CLI, math verifier: '\\boxed{32, 349}' for 32349 was accepted by rules 1."""
    task = _task(tmp_path, answers=["32349", "7"], verifier="math")
    sample_run(tmp_path / "run", task, SeedEchoEngine(), load_verifier("math"), SamplingParams(max_tokens=8),
               2, template="raw")
    run = tmp_path / "run"
    rows = sorted(read_samples(run).to_pylist(), key=lambda r: (r["problem_id"], r["sample_idx"]))
    listed = r"So the digits give \boxed{32, 349}"
    assert not verify_batch("math", ["32349"], [listed])[0].correct, "the current rules reject a box list"
    for r in rows:
        if r["problem_id"] == "p0":  # rules 1 normalised "32, 349" to "32,349" = 32349
            r.update(completion=listed, answer="32, 349", correct=True, verify_status="ok")
    _make_stale(run, rows, drop=("rules", "percent", "set_relations"))
    shards = _files(run)

    result = rlbound("--quiet", "reverify", run)
    assert result.returncode == 0, result.stderr
    assert "rules 1" in result.stdout and f"rules {RULES_VERSION}" in result.stdout
    assert "correct → incorrect" in result.stdout and "2 changed" in result.stdout
    assert "verdicts/" in result.stdout
    assert _files(run) == shards
    p0 = [r for r in load_run(run).table.to_pylist() if r["problem_id"] == "p0"]
    assert [r["correct"] for r in p0] == [False, False]

    again = rlbound("--quiet", "reverify", run)
    assert again.returncode == 0 and "already current" in again.stdout and "nothing written" in again.stdout
    assert len(list((run / "verdicts").glob("*.parquet"))) == 1


def test_bad_runs_give_one_line_errors(tmp_path):
    assert_one_line_error(rlbound("reverify", tmp_path / "norun"), "norun", "not found")
    (tmp_path / "junk").mkdir()
    assert_one_line_error(rlbound("reverify", tmp_path / "junk"), "not a run directory")
    run, _, _ = _stale_run(tmp_path)
    meta = json.loads((run / RUN_FILE).read_text())
    (run / RUN_FILE).write_text(json.dumps({**meta, "config": {**meta["config"], "verifier": {"name": "oracle"}}}))
    assert_one_line_error(rlbound("reverify", run), "cannot rebuild its verifier", "unknown verifier 'oracle'")
    (run / RUN_FILE).write_text(json.dumps({**meta, "config": {**meta["config"], "task": {"name": "nosuch"}}}))
    assert_one_line_error(rlbound("reverify", run), "cannot rebuild its task", "nosuch")
    with pytest.raises(RlboundError, match="timeout"):
        reverify_run(run, timeout_s=0)


def test_sample_records_rules_and_math_verify_version(tmp_path):
    import torch

    from rlbound.engines.tiny.checkpoint import save_model
    from rlbound.engines.tiny.model import TinyConfig, TinyLlama
    from rlbound.engines.tiny.tokenizer import CharTokenizer

    torch.manual_seed(0)
    model = save_model(TinyLlama(TinyConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32)), CharTokenizer(),
                       tmp_path / "model")
    _task(tmp_path, answers=["2", "5"], verifier="math")
    result = rlbound("--quiet", "sample", "--task", tmp_path / "tasks.jsonl", "--engine", "tiny", "--model", model,
                     "--out", tmp_path / "run", "-n", "2", "--max-tokens", "4")
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    from importlib.metadata import version

    settings = meta["config"]["verifier"]["settings"]
    assert meta["config"]["verifier"]["name"] == "math"
    assert settings["rules"] == RULES_VERSION
    assert settings["backend"] == f"math-verify {version('math-verify')}"
    assert meta["versions"]["math-verify"] == version("math-verify")


def test_lab_sampling_stages_are_keyed_on_the_grading_rules():
    """A lab cache graded under other rules is not resumed (the store would refuse it): the
    stages that sample hash their verifiers' settings, rules version included."""
    from rlbound.lab.pipeline import _graders

    graders = _graders(["countdown", "programs"])
    assert graders["programs"]["name"] == "exact"
    assert graders["programs"]["settings"]["rules"] == RULES_VERSION
    assert graders["programs"] == {"name": "exact", "settings": load_verifier("exact").settings()}


def test_a_lost_verdicts_file_is_named_and_graded_again(tmp_path):
    run, truth, expected = _stale_run(tmp_path)
    first = reverify_run(run)
    first.file.unlink()
    with pytest.raises(RlboundError, match=r"current verdicts verdicts/.* are missing.*rlbound reverify"):
        load_run(run).table
    again = reverify_run(run)  # not "current": the file it needs is gone
    assert again.outcome == "written" and again.changes == expected and again.file == first.file
    meta = json.loads((run / RUN_FILE).read_text())
    assert len(meta["verdicts"]["files"]) == 1 and meta["verdicts"]["files"][0]["replaces"] == "samples"
    assert _verdicts(load_run(run).table) == [
        (r["problem_id"], r["sample_idx"], r["answer"], r["correct"], r["verify_status"]) for r in truth
    ]
