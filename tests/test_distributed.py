"""Engine replicas on a real local Ray cluster: the same samples as one process, a replica killed
mid-run loses nothing, and the CLI's --replicas runs a whole sample-and-score job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from rlbound.distributed import ReplicaEngine  # noqa: E402
from rlbound.engines.base import SamplingParams, load_engine  # noqa: E402
from rlbound.errors import RlboundError  # noqa: E402
from rlbound.sampler import sample_run  # noqa: E402
from rlbound.store import read_samples  # noqa: E402
from rlbound.tasks.base import load_task  # noqa: E402
from rlbound.verify.base import load_verifier  # noqa: E402
from tests.test_end_to_end import _random_tiny_model, _sample_cmd  # noqa: E402

pytestmark = pytest.mark.slow
PARAMS = SamplingParams(max_tokens=40)


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (the replicas' engines use one thread each)."""
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _random_tiny_model(tmp_path_factory.mktemp("ray-model") / "m", seed=3)


@pytest.fixture(scope="module")
def task():
    return load_task("arithmetic", n=40, seed=0, difficulty=2)


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory, model, task):
    """The reference: the same run on one in-process engine."""
    path = tmp_path_factory.mktemp("single") / "run"
    sample_run(path, task, load_engine("tiny", str(model), batch_size=64), load_verifier("exact"), PARAMS, 48)
    return _by_key(path)


def _by_key(run) -> dict[tuple[str, int], tuple[int, str]]:
    rows = read_samples(run, columns=["problem_id", "sample_idx", "seed", "completion"]).to_pylist()
    keys = [(r["problem_id"], r["sample_idx"]) for r in rows]
    assert len(keys) == len(set(keys)), "no (problem, sample) twice"
    return {(r["problem_id"], r["sample_idx"]): (r["seed"], r["completion"]) for r in rows}


def _replicas(model, **kw) -> ReplicaEngine:
    return ReplicaEngine("tiny", str(model), {"batch_size": 64}, replicas=2, cpus_per_replica=1, **kw)


def test_two_replicas_give_exactly_the_samples_of_one_process(cluster, model, task, single_process_run, tmp_path):
    engine = _replicas(model)
    try:
        stats = sample_run(tmp_path / "run", task, engine, load_verifier("exact"), PARAMS, 48)
        assert engine.info().details["replicas"] == 2
    finally:
        engine.close()
    assert stats.sampled == 40 * 48
    assert _by_key(tmp_path / "run") == single_process_run


def test_a_replica_killed_mid_run_loses_nothing(cluster, model, task, single_process_run, tmp_path):
    engine = _replicas(model, unit_requests=32)
    victim = engine.pids[0]
    shards = tmp_path / "run" / "samples"

    def kill_after_the_first_shard():
        deadline = time.time() + 60
        while time.time() < deadline and not (shards.is_dir() and any(shards.glob("part-*"))):
            time.sleep(0.005)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_after_the_first_shard)
    killer.start()
    try:
        stats = sample_run(tmp_path / "run", task, engine, load_verifier("exact"), PARAMS, 48, shard_samples=32)
        killer.join()
        assert engine._actors[0] is None, "the kill should have landed mid-run"
    finally:
        killer.join()
        engine.close()
    assert stats.sampled == 40 * 48
    assert _by_key(tmp_path / "run") == single_process_run


def test_when_every_replica_dies_the_samples_are_kept_and_a_rerun_completes(cluster, model, task,
                                                                           single_process_run, tmp_path):
    engine = _replicas(model, unit_requests=32)
    shards = tmp_path / "run" / "samples"

    def kill_both():
        deadline = time.time() + 60
        while time.time() < deadline and not (shards.is_dir() and any(shards.glob("part-*"))):
            time.sleep(0.005)
        for pid in engine.pids:
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_both)
    killer.start()
    try:
        with pytest.raises(RlboundError, match="all 2 engine replicas died .* rerun the same command to resume"):
            sample_run(tmp_path / "run", task, engine, load_verifier("exact"), PARAMS, 48, shard_samples=32)
    finally:
        killer.join()
        engine.close()
    kept = _by_key(tmp_path / "run")
    assert 0 < len(kept) < 40 * 48
    engine = _replicas(model)
    try:
        stats = sample_run(tmp_path / "run", task, engine, load_verifier("exact"), PARAMS, 48)
    finally:
        engine.close()
    assert stats.already_present == len(kept)
    assert _by_key(tmp_path / "run") == single_process_run


def test_replicas_score_like_one_engine(cluster, model):
    engine = _replicas(model)
    local = load_engine("tiny", str(model))
    prompts = [f"Q: {i}+{i}\nA: " for i in range(50)]
    completions = [str(2 * i) for i in range(50)]
    try:
        remote = engine.score(prompts, completions)
    finally:
        engine.close()
    for a, b in zip(remote, local.score(prompts, completions)):
        assert a.token_ids == b.token_ids
        np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-6)


def test_an_engine_that_cannot_load_is_one_line(cluster, tmp_path):
    with pytest.raises(RlboundError, match="could not load its engine: tiny model directory .* does not exist"):
        ReplicaEngine("tiny", str(tmp_path / "missing"), replicas=2)


def test_cli_replicas_sample_and_score(model, single_process_run, tmp_path):
    """The CLI starts its own local Ray cluster; the run equals the single-process one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    cmd = _sample_cmd(model, run, n=48, problems=40, max_tokens=40) + ["--replicas", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert _by_key(run) == single_process_run
    scored = subprocess.run(
        [sys.executable, "-m", "rlbound.cli", "--quiet", "score", str(run), "--engine", "tiny",
         "--scorer", str(model), "--replicas", "2", "--label", "self"],
        capture_output=True, text=True, timeout=300, env=env)
    assert scored.returncode == 0, scored.stderr
    assert f"{40 * 48} samples scored" in scored.stdout
