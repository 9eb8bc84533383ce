"""One writer per run directory (rlbound.runlock): real `rlbound sample` / `reverify` processes
refused while another process holds the run's lock, and a lock whose holder was SIGKILLed taken
over with a warning."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlbound.errors import RlboundError
from rlbound.runlock import LOCK_FILE, RunLock, lock_run
from rlbound.store import RUN_FILE, load_run, read_samples
from tests.stored_runs import CONFIG, write_run
from tests.test_cli import assert_one_line_error, rlbound
from tests.test_end_to_end import _random_tiny_model, _sample_cmd
from tests.test_reverify import _stale_run
from tests.test_store import SeedEchoEngine, _run

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
HOLD = ("import sys, time; from rlbound.runlock import RunLock; "
        "lock = RunLock(sys.argv[1], 'it is'); print('held', flush=True); time.sleep(300)")


def _hold(lock_path: Path) -> subprocess.Popen:
    """A separate process that takes the lock at ``lock_path`` and sleeps holding it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held", proc.communicate()
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def _keys(run: Path) -> list[tuple[str, int]]:
    table = read_samples(run, columns=["problem_id", "sample_idx"])
    return list(zip(table.column("problem_id").to_pylist(), table.column("sample_idx").to_pylist()))


def _recorded_pid(lock_path: Path) -> int | None:
    """The pid in a lock file's holder record; None while it is missing, empty or half-written."""
    try:
        return json.loads(lock_path.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return _random_tiny_model(tmp_path_factory.mktemp("model") / "m", seed=0)


@pytest.mark.slow
def test_second_sampler_of_a_run_is_refused_and_the_first_completes(tmp_path, tiny_model):
    run = tmp_path / "run"
    cmd = _sample_cmd(tiny_model, run, n=128, problems=8, max_tokens=16) + ["--shard-samples", "256"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.time() + 120
        while _recorded_pid(run / LOCK_FILE) != first.pid:  # it holds the lock (it may have written shards)
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.005)
        first.send_signal(signal.SIGSTOP)  # holding the lock, stopped: the overlap is certain
        assert _recorded_pid(run / LOCK_FILE) == first.pid and first.poll() is None
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV)
        assert_one_line_error(second, f"run '{run}' is being written by pid {first.pid} on host "
                                      f"{socket.gethostname()} (since ", "wait for it or stop it")
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    keys = _keys(run)
    assert len(keys) == len(set(keys)) == 8 * 128
    assert json.loads((run / RUN_FILE).read_text())["samples"] == 8 * 128
    assert (run / LOCK_FILE).read_text() == ""  # released cleanly: no holder recorded


@pytest.mark.slow
def test_sampler_waits_out_a_live_holder_and_takes_over_a_killed_one(tmp_path, tiny_model):
    run = tmp_path / "run"
    cmd = _sample_cmd(tiny_model, run, n=4, problems=5, max_tokens=12)
    holder = _hold(run / LOCK_FILE)
    try:
        refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV)
        assert_one_line_error(refused, f"is being written by pid {holder.pid} on host {socket.gethostname()}")
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # nothing written
        holder.send_signal(signal.SIGKILL)  # no release: its record stays in the lock file
        holder.wait()
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV)
    finally:
        _stop(holder)
    assert done.returncode == 0, done.stderr
    assert f"no longer being written by pid {holder.pid}" in done.stderr and "taking it over" in done.stderr
    keys = _keys(run)
    assert len(keys) == len(set(keys)) == 5 * 4
    assert (run / LOCK_FILE).read_text() == ""


@pytest.mark.slow
def test_reverify_is_refused_while_the_run_is_locked(tmp_path):
    run, _, _ = _stale_run(tmp_path)
    before = (run / RUN_FILE).read_text()
    holder = _hold(run / LOCK_FILE)
    try:
        refused = rlbound("reverify", run)
        assert_one_line_error(refused, f"run '{run}' is being written by pid {holder.pid}")
        assert (run / RUN_FILE).read_text() == before and not (run / "verdicts").exists()
    finally:
        _stop(holder)
    done = rlbound("reverify", run)
    assert done.returncode == 0, done.stderr
    assert "re-graded" in done.stdout and (run / "verdicts").is_dir()


# -- in one process ----------------------------------------------------------------------------


def test_a_second_writer_in_the_same_process_is_refused_until_the_first_closes(tmp_path):
    from rlbound.store import RunWriter

    with RunWriter(tmp_path / "run", CONFIG, 2) as writer:
        with pytest.raises(RlboundError, match=r"being written by pid \d+ \(this process\) on host"):
            RunWriter(tmp_path / "run", CONFIG, 2)
        assert writer.meta["n"] == 2
    with RunWriter(tmp_path / "run", CONFIG, 3) as writer:
        assert writer.meta["n"] == 3


def test_lock_file_is_not_data(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text("")  # left by a writer killed before it wrote run.json
    write_run(run, "r", {"p": [("a", 1, True, "ok"), ("b", 1, False, "ok")]})
    loaded = load_run(run)
    assert loaded.samples.n.tolist() == [2] and loaded.table.num_rows == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RlboundError, match="exists and is not a run directory"):
        write_run(other, "r", {"p": [("a", 1, True, "ok")]})
    assert not (other / LOCK_FILE).exists()  # no lock file left in a directory that is not a run


def test_sampler_releases_the_lock_when_it_fails(tmp_path):
    class Failing(SeedEchoEngine):
        def generate(self, prompts, params, seeds):
            raise RuntimeError("engine died")

    with pytest.raises(RuntimeError, match="engine died"):
        _run(tmp_path, n=2, engine=Failing())
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""
    assert _run(tmp_path, n=2).sampled == 12


def test_record_left_by_another_host_is_never_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": 99, "host": "elsewhere", "since": "2026-01-01T00:00:00Z"}))
    with pytest.raises(RlboundError, match=r"pid 99 on host elsewhere .*delete '.*\.lock' and rerun"):
        lock_run(run)


def test_without_flock_the_record_decides(tmp_path, monkeypatch, caplog):
    """A filesystem without flock (ENOLCK), simulated: a live holder's record refuses, a dead one's
    is taken over with a warning."""
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    holder = _hold(tmp_path / LOCK_FILE)  # writes its record (it could flock: a real filesystem)
    monkeypatch.setattr(fcntl, "flock", no_flock)
    try:
        with pytest.raises(RlboundError, match=f"being written by pid {holder.pid} "):
            RunLock(tmp_path / LOCK_FILE, "it is")
    finally:
        _stop(holder)
    with RunLock(tmp_path / LOCK_FILE, "it is"):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"no longer being written by pid {holder.pid}" in caplog.text


def test_score_lock_is_per_label_and_not_the_run_lock(tmp_path):
    from rlbound.scoring import score_run

    _run(tmp_path, n=2)
    run = tmp_path / "run"
    with lock_run(run):  # a sampler writing the run does not stop a scorer
        assert score_run(run, SeedEchoEngine(), label="a").scored == 12
    with RunLock(run / "scores" / ".b.lock", "they are"):
        with pytest.raises(RlboundError, match=rf"scores 'b' of run '{run}' are being written by pid"):
            score_run(run, SeedEchoEngine(), label="b")
    assert [s.scorer_label for s in load_run(run).scores] == ["a"]
