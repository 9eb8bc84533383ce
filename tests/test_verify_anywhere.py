"""Verification works from wherever users call it: no main guard, threads, daemonic processes.

Each scenario runs as a real subprocess of the test (a fresh interpreter, real worker processes)
and prints its verdicts. Also here: the memory limit with a real Math-Verify input, workers that
outlive neither their caller nor its exit, and the one-line error for a verifier class that
worker processes cannot import.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rlbound.verify import MathVerifier, VerifierPool, VerifyCache, verify_batch

# "1/2" against a right and a wrong answer.
TWO_VERDICTS = (
    "import rlbound\n"
    "right = rlbound.verify_math('1/2', '\\\\boxed{0.5}')\n"
    "wrong = rlbound.verify_math('1/2', '\\\\boxed{3}')\n"
    "print(right.status, right.correct, wrong.status, wrong.correct)\n"
)
EXPECTED = "ok True ok False"
# Prints the process ids of the default pool's workers (to check that none outlives the caller).
PRINT_WORKER_PIDS = (
    "from rlbound.verify import pool as _pool\n"
    "print('workers', *[w.process.pid for w in _pool.default_pool()._workers if w])\n"
)


def _run_python(args: list[str], stdin: str | None = None, timeout: float = 60):
    result = subprocess.run(
        [sys.executable, *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no worker noise on the user's terminal
    return result


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(_gone(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return all(_gone(pid) for pid in pids)


def test_script_without_main_guard(tmp_path: Path) -> None:
    script = tmp_path / "plain.py"
    script.write_text(TWO_VERDICTS + PRINT_WORKER_PIDS)
    lines = _run_python([str(script)]).stdout.splitlines()
    assert lines[0] == EXPECTED
    pids = [int(pid) for pid in lines[1].split()[1:]]
    assert len(pids) == 1  # both calls used the one worker of the process-wide pool
    assert _wait_gone(pids, 2.0), "a worker outlived its caller's exit"


def test_code_read_from_standard_input() -> None:
    assert _run_python(["-"], stdin=TWO_VERDICTS).stdout.strip() == EXPECTED


def test_from_a_thread(tmp_path: Path) -> None:
    script = tmp_path / "threaded.py"
    body = TWO_VERDICTS.replace("\n", "\n    ").rstrip()
    script.write_text(
        "import threading\n"
        f"def grade():\n    {body}\n"
        "thread = threading.Thread(target=grade)\n"
        "thread.start()\n"
        "thread.join()\n"
    )
    assert _run_python([str(script)]).stdout.strip() == EXPECTED


def test_from_daemonic_multiprocessing_workers(tmp_path: Path) -> None:
    """Pool workers (daemonic, so they may not use multiprocessing themselves) start verifier
    workers; the parent verifies first, so its forked children must leave its workers alone."""
    script = tmp_path / "mp_pool.py"
    script.write_text(
        textwrap.dedent(
            """
            import multiprocessing
            import rlbound

            def grade(answer):
                verdict = rlbound.verify_math("1/2", answer)
                return multiprocessing.current_process().daemon, verdict.status, verdict.correct

            if __name__ == "__main__":
                print("parent", rlbound.verify_math("1/2", "\\\\boxed{0.5}").correct)
                with multiprocessing.get_context("fork").Pool(2) as pool:
                    print(*pool.map(grade, ["\\\\boxed{0.5}", "\\\\boxed{3}"]))
                print("parent again", rlbound.verify_math("1/2", "\\\\boxed{3}").correct)
            """
        )
    )
    lines = _run_python([str(script)]).stdout.splitlines()
    assert lines == [
        "parent True",
        "(True, 'ok', True) (True, 'ok', False)",
        "parent again False",
    ]


def test_verifier_class_in_main_gets_a_one_line_error(tmp_path: Path) -> None:
    script = tmp_path / "local_verifier.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, types
            from rlbound.errors import RlboundError
            from rlbound.verify import ExactVerifier, verify_batch

            class MainVerifier(ExactVerifier):
                cheap = False  # needs the pool

            # A class the caller can pickle but a worker cannot import (a module made on the fly).
            made_up = types.ModuleType("made_up_module")
            exec("from rlbound.verify import ExactVerifier\\n"
                 "class Unimportable(ExactVerifier):\\n    cheap = False\\n", made_up.__dict__)
            sys.modules["made_up_module"] = made_up

            for verifier in (MainVerifier(), made_up.Unimportable()):
                try:
                    verify_batch(verifier, ["1"], ["\\\\boxed{1}"])
                except RlboundError as exc:
                    print(exc)
            """
        )
    )
    lines = _run_python([str(script)], timeout=60).stdout.splitlines()
    assert len(lines) == 2, lines  # one line per error
    assert "__main__.MainVerifier" in lines[0] and "importable module" in lines[0]
    assert "made_up_module" in lines[1] and "importable module" in lines[1]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_worker_of_a_killed_caller_exits_mid_check(tmp_path: Path) -> None:
    """SIGKILL the caller while its worker computes 9^(9^9): the worker must not live on."""
    script = tmp_path / "killed.py"
    script.write_text(
        textwrap.dedent(
            """
            import threading, time
            import rlbound
            from rlbound.verify import pool

            def report():
                def first():  # a slot exists before its worker has started
                    workers = pool.default_pool()._workers
                    return workers[0] if workers else None

                while first() is None:
                    time.sleep(0.01)
                print("workers", first().process.pid, flush=True)

            threading.Thread(target=report).start()
            rlbound.verify_math("7", "\\\\boxed{9^{9^{9}}}", timeout_s=1.0)
            """
        )
    )
    caller = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(caller.stdout.readline().split()[1])
        time.sleep(1.0)  # the worker loads Math-Verify and starts the hanging check
        assert not _gone(pid)
        caller.send_signal(signal.SIGKILL)
        caller.wait()
        # The parent would have killed it at 1 s; the kernel's CPU backstop ends it soon after.
        assert _wait_gone([pid], 15.0), "the orphaned worker kept computing"
    finally:
        caller.kill()
        caller.wait()
        caller.stdout.close()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_memory_bomb_is_bounded_and_the_batch_completes() -> None:
    """A real Math-Verify input: comparing 2^(2^40) evaluates it by repeated squaring, which needs
    more memory at every step. Under a small limit it fails fast (Math-Verify swallows the
    MemoryError; the worker's peak gives it away), gets ``error`` and the other checks finish."""
    references = ["7", r"\frac{1}{2}", "3", "(1,2]", "12"]
    completions = [
        r"\boxed{2^{2^{40}}}", r"\boxed{0.5}", r"\boxed{x = 3}", r"\boxed{(1, 2]}", r"\boxed{21}"
    ]
    cache = VerifyCache()
    with VerifierPool(workers=2) as pool:
        start = time.monotonic()
        verdicts = verify_batch(
            MathVerifier(), references, completions, timeout_s=20.0, memory_limit_mb=160, pool=pool,
            cache=cache,
        )
        elapsed = time.monotonic() - start
        assert [(v.status, v.correct) for v in verdicts] == [
            ("error", False),
            ("ok", True),
            ("ok", True),
            ("ok", True),
            ("ok", False),
        ]
        assert elapsed < 10.0, f"the bomb ran for {elapsed:.1f}s: the memory limit did not stop it"
        assert pool.kills == 0  # ended by the memory limit, not by the time limit
        assert pool.n_alive == 2  # the worker it retired was replaced
    assert len(cache) == 5 and cache.checks == 5  # the error is cached like any other verdict


def test_workers_start_warm_and_are_reused_between_calls() -> None:
    """One worker, many calls: only the first pays the start-up."""
    with VerifierPool(workers=1) as pool:
        first = time.monotonic()
        verify_batch(MathVerifier(), ["1"], [r"\boxed{1.0}"], pool=pool)
        first = time.monotonic() - first
        pid = pool._workers[0].process.pid
        later = time.monotonic()
        for i in range(20):
            verdict = verify_batch(MathVerifier(), [str(i)], [rf"\boxed{{{i}}}"], pool=pool)[0]
            assert verdict.correct
        later = (time.monotonic() - later) / 20
        assert pool._workers[0].process.pid == pid
    assert later < first / 5, (first, later)
