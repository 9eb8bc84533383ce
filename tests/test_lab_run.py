"""`rlbound lab run --preset quick` end to end: every stage, the reports, the cache, a changed knob."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MODELS = ["base", "teacher", "distilled", "self-trained", "grpo"]


def lab(*args, cwd=None):
    cmd = [sys.executable, "-m", "rlbound.cli", "--quiet", "lab", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=cwd)


def _stages(out):
    return {s["name"]: s for s in json.loads((out / "lab.json").read_text())["stages"]}


def test_quick_lab_end_to_end_cached_and_partly_rerun(tmp_path):
    out = tmp_path / "lab"
    first = lab("run", "--preset", "quick", "--out", out)
    assert first.returncode == 0, first.stderr[-3000:]
    record = json.loads((out / "lab.json").read_text())
    stages = _stages(out)
    expected = ({"corpus-base", "corpus-teacher", "pretrain-base", "pretrain-teacher", "distill",
                 "self-train", "rl-grpo", "train-eval-base-programs", "train-eval-grpo-programs"}
                | {f"eval-{m}-{f}" for m in MODELS for f in ("countdown", "programs")})
    assert set(stages) == expected
    assert not any(s["cached"] for s in stages.values())
    assert all(s["wall_s"] > 0 for s in stages.values())
    assert stages["pretrain-base"]["tokens_per_s"] > 0
    assert stages["distill"]["examples"] > 0 and stages["self-train"]["examples"] > 0
    assert [(r["family"], r["model"]) for r in record["summary"]] == [
        (f, m) for f in ("countdown", "programs") for m in MODELS]
    for row in record["summary"]:
        assert 0 <= row["pass@1"] <= row["pass@64"] <= 1 and row["problems"] == 10
    # the base model learned something on programs (most of its short programs are solved at k = 64)
    base_programs = next(r for r in record["summary"] if r["family"] == "programs" and r["model"] == "base")
    assert base_programs["pass@64"] > 0.3
    # a short GRPO run (20 steps on 100 programs problems) raises pass@1 on the problems it trained
    # on, measured by re-sampling the base and the trained model on them (100 problems x 8 samples)
    grpo_programs = next(r for r in record["summary"] if r["family"] == "programs" and r["model"] == "grpo")
    assert stages["rl-grpo"]["steps"] == 20
    assert grpo_programs["train_pass@1"] > base_programs["train_pass@1"] + 0.03
    assert grpo_programs["train_pass@1_ci"][0] <= grpo_programs["train_pass@1"] <= grpo_programs["train_pass@1_ci"][1]
    for row in record["summary"]:
        assert row["delta_se"] == pytest.approx(base_of(record, row["family"])["pass@64"] - row["pass@1"])
        assert row["solved"] + row["only_base"] - row["only_model"] == base_of(record, row["family"])["solved"]
    for family in ("countdown", "programs"):
        page = (out / "report" / family / "report.html").read_text()
        assert "By problem group" in page and "Stages" in page and "pretrain-base" in page
        assert "<h2>RL training</h2>" in page
        results = json.loads((out / "report" / family / "results.json").read_text())
        assert [r["label"] for r in results["runs"]] == MODELS
        assert {g for g in results["groups"]["groups"]} == (
            {"chain", "tree"} if family == "countdown" else {"short", "long"})
    assert "report (countdown):" in first.stdout and "pass@64" in first.stdout
    schedule = record["schedule"]  # every stage built, side by side in the default workers
    assert schedule["built"] == len(expected) and 0 < schedule["wall_s"]
    assert schedule["stage_s"] == pytest.approx(sum(s["wall_s"] for s in stages.values()), abs=0.5)
    assert f"stages: {len(expected)} built in" in first.stdout

    again = lab("run", "--preset", "quick", "--out", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(s["cached"] for s in _stages(out).values())
    assert json.loads((out / "lab.json").read_text())["summary"] == record["summary"]
    assert json.loads((out / "lab.json").read_text())["schedule"]["built"] == 0 and "stages:" not in again.stdout

    knob = tmp_path / "slower.toml"
    knob.write_text("[self_train]\nlr = 1e-4\n[rl]\nsteps = 4\n")
    changed = lab("run", "--preset", "quick", "--config", knob, "--out", out)
    assert changed.returncode == 0, changed.stderr[-3000:]
    rebuilt = {name for name, s in _stages(out).items() if not s["cached"]}
    assert rebuilt == {"self-train", "eval-self-trained-countdown", "eval-self-trained-programs",
                       "rl-grpo", "eval-grpo-countdown", "eval-grpo-programs", "train-eval-grpo-programs"}

    # another test set: only the evaluations are rebuilt (train and test problems are disjoint by hash)
    fewer = tmp_path / "fewer.toml"
    fewer.write_text(knob.read_text() + "[world]\ntest_problems = 6\n")
    resized = lab("run", "--preset", "quick", "--config", fewer, "--out", out)
    assert resized.returncode == 0, resized.stderr[-3000:]
    rebuilt = {name for name, s in _stages(out).items() if not s["cached"]}
    assert rebuilt == {f"eval-{m}-{f}" for m in MODELS for f in ("countdown", "programs")}
    assert {r["problems"] for r in json.loads((out / "lab.json").read_text())["summary"]} == {6}


def test_stages_built_when_training_hashed_the_test_set_are_reused(tmp_path):
    """A stage whose stored spec holds world.test_problems (as every stage's did) is found by its
    spec and reused; a stage whose spec differs otherwise is built anew."""
    from rlbound.lab.pipeline import _key, _Stages

    world = {"seed": 0, "countdown_difficulty": 2}
    old_spec = {"world": {**world, "test_problems": 30}, "corpus": {"problems": 10}}
    old_dir = tmp_path / "stages" / f"corpus-base-{_key('corpus-base', old_spec)}"
    old_dir.mkdir(parents=True)
    (old_dir / "spec.json").write_text(json.dumps(old_spec))
    (old_dir / "stage.json").write_text(json.dumps({"wall_s": 1.5, "info": {"made": "before"}}))
    built = []
    stages = _Stages(tmp_path, "float32")
    stages.plan("corpus-base", {"world": world, "corpus": {"problems": 10}}, lambda p: built.append(p) or {},
                numeric=False)
    same = stages.build(1)["corpus-base"]
    assert same.cached and same.path == str(old_dir) and same.info == {"made": "before"} and not built
    stages.plan("corpus-base", {"world": world, "corpus": {"problems": 11}}, lambda p: built.append(p) or {},
                numeric=False)
    other = stages.build(1)["corpus-base"]
    assert not other.cached and built == [Path(other.path)] and other.path != str(old_dir)


def base_of(record, family):
    return next(r for r in record["summary"] if r["family"] == family and r["model"] == "base")


def test_lab_config_prints_a_file_that_runs_back(tmp_path):
    printed = lab("config", "--preset", "quick")
    assert printed.returncode == 0
    assert "[pretrain]" in printed.stdout and "# Optimiser steps." in printed.stdout
    from rlbound.lab.config import load_config, preset

    path = tmp_path / "lab.toml"
    path.write_text(printed.stdout)
    assert load_config("default", path) == preset("quick")


def test_lab_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[base_corpus]\nsolves = { chain = ['tree'] }\n")
    result = lab("run", "--preset", "quick", "--config", bad, "--out", tmp_path / "lab")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "base_corpus.solves.chain" in result.stderr and "cannot solve 'tree'" in result.stderr
    result = lab("run", "--preset", "tiny", "--out", tmp_path / "lab")
    assert result.returncode == 2 and "unknown lab preset 'tiny'" in result.stderr


def _corpus_jobs(stages, config):
    from rlbound.lab.pipeline import _write_corpus

    return [stages.plan(f"corpus-{which}", {"corpus": getattr(config, f"{which}_corpus").as_dict()}, _write_corpus,
                        (config, f"{which}_corpus"), numeric=False) for which in ("base", "teacher")]


def _small_quick():
    from rlbound.lab.config import preset

    config = preset("quick")
    return replace(config, base_corpus=replace(config.base_corpus, problems=40),
                   teacher_corpus=replace(config.teacher_corpus, problems=30),
                   pretrain=replace(config.pretrain, steps=4, checkpoint_every=2))


def test_stages_built_in_worker_processes_equal_those_built_here(tmp_path):
    """build() builds stages in spawned processes (real ones, two at a time), records them in
    plan order, writes what a build in this process writes, and reuses them on the next call."""
    import torch

    from rlbound.lab.pipeline import _Stages, threads_per_worker

    config = _small_quick()
    here_stages, there_stages = _Stages(tmp_path / "here"), _Stages(tmp_path / "there")
    _corpus_jobs(here_stages, config)
    _corpus_jobs(there_stages, config)
    here = list(here_stages.build(1).values())
    there = there_stages.build(2)
    assert list(there) == ["corpus-base", "corpus-teacher"] and not any(r.cached for r in there.values())
    assert [r.name for r in there_stages.records] == list(there)
    # the first to finish ran beside the other all along (the other may take up its core after)
    assert min(r.info["threads"] for r in there.values()) == threads_per_worker(2)
    for a, b in zip(here, there.values()):
        assert a.key == b.key and a.info["threads"] == torch.get_num_threads()
        assert {**a.info, "threads": 0} == {**b.info, "threads": 0}
        files = sorted(p.relative_to(a.path) for p in Path(a.path).rglob("*") if p.is_file())
        assert files and files == sorted(p.relative_to(b.path) for p in Path(b.path).rglob("*") if p.is_file())
        for f in files:
            if f.name != "stage.json":  # holds the wall time
                assert (Path(a.path) / f).read_bytes() == (Path(b.path) / f).read_bytes()
    again_stages = _Stages(tmp_path / "there")
    _corpus_jobs(again_stages, config)
    again = again_stages.build(2)
    assert all(r.cached for r in again.values()) and [r.path for r in again.values()] == [r.path for r in there.values()]


def test_a_stage_starts_once_what_it_needs_is_built_and_a_failure_keeps_the_rest(tmp_path):
    """A pretraining stage planned before its corpus, needing it, waits for it (it reads the
    corpus file, so a start before would fail), and, since the other stage left needs it, runs in
    this process with all its threads, not in a one-thread worker beside the other corpus; a
    stage that fails in a worker is raised once the stage running beside it is finished and
    recorded, and what needs the failed one never starts."""
    import torch

    from rlbound.lab.pipeline import _blocks_the_rest, _pretrain, _Stages, threads_per_worker

    config = _small_quick()
    config = replace(config, teacher_pretrain=replace(config.teacher_pretrain, steps=2, checkpoint_every=2))
    stages = _Stages(tmp_path)
    pretrain = stages.plan("pretrain-base", {"steps": 4}, _pretrain, (config, "pretrain", None, None),
                           needs=("corpus-base",))
    base, teacher = _corpus_jobs(stages, config)
    pretrain.args = (config, "pretrain", str(base.path), None)  # known once its corpus is planned
    stages.plan("pretrain-teacher", {"steps": 2}, _pretrain,
                (config, "teacher_pretrain", str(teacher.path), str(pretrain.path / "model")),
                needs=("corpus-teacher", "pretrain-base"))
    assert _blocks_the_rest(pretrain, stages.planned[:1] + stages.planned[3:])
    assert not _blocks_the_rest(pretrain, stages.planned)  # the teacher's corpus needs nothing
    built = stages.build(2)
    assert list(built) == ["pretrain-base", "corpus-base", "corpus-teacher", "pretrain-teacher"]
    assert (pretrain.path / "model").is_dir() and built["pretrain-base"].info["final_loss"] > 0
    assert built["pretrain-base"].info["threads"] == torch.get_num_threads()
    assert min(built[f"corpus-{w}"].info["threads"] for w in ("base", "teacher")) == threads_per_worker(2)

    stages = _Stages(tmp_path / "failing")
    broken = stages.plan("pretrain-base", {"steps": 4}, _pretrain, (config, "pretrain", str(tmp_path / "none"), None))
    after = stages.plan("pretrain-teacher", {"steps": 4}, _pretrain, (config, "pretrain", str(tmp_path / "none"), None),
                        needs=("pretrain-base",))
    base, teacher = _corpus_jobs(stages, config)
    with pytest.raises(FileNotFoundError):
        stages.build(2)
    assert not (broken.path / "stage.json").exists() and not after.path.exists()
    assert (base.path / "stage.json").exists() and not teacher.path.exists()  # finished beside it; never started


def test_a_stage_left_alone_in_a_worker_takes_up_the_cores_the_others_left(tmp_path):
    """Two corpus stages in two workers, one 300 times the other: while both run each has its
    share of the cores; once the small one is done, the large one (still writing traces, each an
    advance of its bar) is given every core."""
    from rlbound.lab.pipeline import _Stages, threads_per_worker, usable_cores

    config = _small_quick()
    config = replace(config, base_corpus=replace(config.base_corpus, problems=3000),
                     teacher_corpus=replace(config.teacher_corpus, problems=10))
    stages = _Stages(tmp_path)
    _corpus_jobs(stages, config)
    built = stages.build(2)
    assert built["corpus-teacher"].info["threads"] == threads_per_worker(2)
    assert built["corpus-base"].info["threads"] == usable_cores()


def _process_gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # ended, not yet reaped by whoever adopted it


WORKERS_OF_A_KILLED_LAB = """
import os, sys, time
from rlbound.lab.pipeline import _spawn_context, _worker_pool
pool = _worker_pool(1, _spawn_context().RawValue("i", 0))
worker = pool.submit(os.getpid).result()
pool.submit(time.sleep, 300)  # a stage that would go on long after the lab process is gone
print(worker, flush=True)
time.sleep(300)
"""


def test_worker_processes_end_when_the_lab_process_is_killed():
    """A lab process killed outright (SIGKILL: no shutdown runs) leaves no worker building on its
    own; it would race the stage a resumed run builds in the same directory."""
    import os
    import signal
    import time

    lab = subprocess.Popen([sys.executable, "-c", WORKERS_OF_A_KILLED_LAB], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(lab.stdout.readline())
        assert not _process_gone(worker)
        os.kill(lab.pid, signal.SIGKILL)
        lab.wait(timeout=30)
        deadline = time.monotonic() + 20
        while not _process_gone(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _process_gone(worker), "the worker outlived the lab process"
    finally:
        lab.kill()
