"""The streaming sampler: generation, verification and writing overlap; memory stays bounded;
an engine error or a kill -9 loses nothing already written, and reruns fill exactly the rest."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time

import pytest

from rlbound.engines.base import Sample, SamplingParams
from rlbound.errors import RlboundError
from rlbound.sampler import VERIFY_BATCH_MAX, sample_run
from rlbound.store import read_samples
from rlbound.tasks.base import load_task
from rlbound.verify.base import Verifier, load_verifier
from tests.test_end_to_end import _random_tiny_model, _sample_cmd
from tests.test_store import SeedEchoEngine

PARAMS = SamplingParams(max_tokens=8)


def _keys(run) -> list[tuple[str, int]]:
    table = read_samples(run, columns=["problem_id", "sample_idx"])
    return list(zip(table.column("problem_id").to_pylist(), table.column("sample_idx").to_pylist()))


class CountingVerifier(Verifier):
    """Exact match that counts its checks and takes ``delay_s`` per check (runs inline)."""

    name = "counting"
    cheap = True

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.checked = 0
        self._exact = load_verifier("exact")

    def extract(self, completion):
        return self._exact.extract(completion)

    def normalise(self, answer):
        return self._exact.normalise(answer)

    def equivalent(self, reference, answer):
        self.checked += 1
        time.sleep(self.delay_s)
        return self._exact.equivalent(reference, answer)


class UniqueAnswerEngine(SeedEchoEngine):
    """Every sample a distinct answer (its seed), so each one is a separate check; records how far
    generation ran ahead of verification at every completion it hands out."""

    def __init__(self, verifier: CountingVerifier, delay_s: float = 0.0, fail_after: int | None = None):
        super().__init__()
        self.verifier, self.delay_s, self.fail_after = verifier, delay_s, fail_after
        self.ahead: list[int] = []
        self.handed = 0

    def stream_window(self) -> int:
        return 16

    def generate(self, prompts, params, seeds):
        time.sleep(self.delay_s)
        return [[Sample(f"#### {s}", [1], "stop", [-0.1]) for s in row] for row in seeds]

    def stream(self, requests, params):
        for request, sample in super().stream(requests, params):
            if self.fail_after is not None and self.handed >= self.fail_after:
                raise RlboundError("server stopped answering")
            self.ahead.append(self.handed - self.verifier.checked)
            self.handed += 1
            yield request, sample


def test_verification_overlaps_generation_and_the_backlog_is_bounded(tmp_path):
    verifier = CountingVerifier(delay_s=0.0005)
    engine = UniqueAnswerEngine(verifier)
    task = load_task("arithmetic", n=100, seed=0, difficulty=1)
    stats = sample_run(tmp_path / "run", task, engine, verifier, PARAMS, 60, shard_samples=256)
    assert stats.sampled == 6000 and len(set(_keys(tmp_path / "run"))) == 6000
    assert verifier.checked == 6000  # every answer distinct: nothing deduplicated away
    # The verifier is the slow stage here: generation waits on the bounded queue instead of
    # running ahead with every completion in memory.
    bound = max(2 * 256, VERIFY_BATCH_MAX) + VERIFY_BATCH_MAX + 16
    assert max(engine.ahead) <= bound
    assert max(engine.ahead) > 256  # and it did run ahead: the two stages overlapped
    assert stats.shards >= 6000 // 256


def test_shards_are_written_every_few_seconds_while_generation_goes_on(tmp_path):
    verifier = CountingVerifier()
    engine = UniqueAnswerEngine(verifier, delay_s=0.05)  # 16 samples per 50 ms
    task = load_task("arithmetic", n=10, seed=0, difficulty=1)
    seen_during_run = []

    def watch():
        deadline = time.time() + 30
        while time.time() < deadline and not seen_during_run:
            shards = list((tmp_path / "run" / "samples").glob("part-*.parquet"))
            if shards and engine.handed < 10 * 40:
                seen_during_run.append(engine.handed)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    stats = sample_run(tmp_path / "run", task, engine, verifier, PARAMS, 40,
                       shard_samples=10_000, shard_seconds=0.3)
    watcher.join()
    assert seen_during_run, "a shard should be on disk before generation ended"
    assert stats.shards >= 2 and stats.sampled == 400
    assert 0 < stats.engine_busy_s <= stats.wall_s


def test_an_engine_error_keeps_what_was_returned_and_a_rerun_fills_the_rest(tmp_path):
    verifier = CountingVerifier()
    task = load_task("arithmetic", n=20, seed=0, difficulty=1)
    with pytest.raises(RlboundError, match="server stopped answering"):
        sample_run(tmp_path / "run", task, UniqueAnswerEngine(verifier, fail_after=250), verifier,
                   PARAMS, 30, shard_samples=10_000)
    assert len(_keys(tmp_path / "run")) == 250  # every completion handed over was written
    stats = sample_run(tmp_path / "run", task, UniqueAnswerEngine(verifier), verifier, PARAMS, 30)
    keys = _keys(tmp_path / "run")
    assert stats.already_present == 250 and stats.sampled == 350
    assert len(keys) == len(set(keys)) == 600


def test_a_verifier_error_stops_the_run_with_that_error(tmp_path):
    class Broken(CountingVerifier):
        def extract(self, completion):
            raise RlboundError("verifier broke")

    verifier = Broken()
    task = load_task("arithmetic", n=5, seed=0, difficulty=1)
    with pytest.raises(RlboundError, match="verifier broke"):
        sample_run(tmp_path / "run", task, UniqueAnswerEngine(verifier), verifier, PARAMS, 400)


@pytest.mark.slow
def test_kill_9_at_ten_random_points_then_rerun_leaves_every_sample_exactly_once(tmp_path):
    model = _random_tiny_model(tmp_path / "model", seed=0)
    run = tmp_path / "run"
    problems = 100  # ten kills must leave work for the rerun however fast the engine is
    cmd = _sample_cmd(model, run, n=128, problems=problems, max_tokens=64) + ["--shard-samples", "64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(0)
    counts = []
    for _ in range(10):
        shards_before = len(list((run / "samples").glob("part-*"))) if (run / "samples").is_dir() else 0
        target = shards_before + rng.randint(1, 3)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                start_new_session=True)
        deadline = time.time() + 120
        while len(list((run / "samples").glob("part-*"))) < target if (run / "samples").is_dir() else True:
            assert proc.poll() is None and time.time() < deadline, (counts, proc.communicate())
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.15))  # anywhere: generating, verifying, writing
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        keys = _keys(run)
        assert len(keys) == len(set(keys)), "a kill must never leave a duplicate"
        counts.append(len(keys))
    assert counts == sorted(counts) and counts[0] > 0 and counts[-1] < problems * 128, counts
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    keys = _keys(run)
    assert len(keys) == len(set(keys)) == problems * 128
    assert {i for _, i in keys} == set(range(128))
