"""The verification pool: hard time limit with a kill, errors, crashes, cache and deduplication.

The helper verifiers below live in this module so that worker processes can import them when
they unpickle a check (each worker is a fresh interpreter that gets the test run's ``sys.path``).
Starting verification from scripts, threads and other processes is in test_verify_anywhere.py.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from rlbound.verify import (
    ExactVerifier,
    MathVerifier,
    Verifier,
    VerifierPool,
    VerifyCache,
    verify_batch,
)
from rlbound.verify.extract import extract_answer, normalise

LIMIT_S = 2.0
# An answer that makes Math-Verify (sympy) evaluate 9**(9**9): hours of big-integer work.
HANGING_ANSWER = r"\boxed{9^{9^{9}}}"


class CountingVerifier(Verifier):
    """Exact string match that appends one line to ``log_path`` per check (across processes)."""

    name = "counting"

    def __init__(self, log_path: str):
        self.log_path = log_path

    def extract(self, completion: str) -> str | None:
        return extract_answer(completion)

    def normalise(self, answer: str) -> str:
        return normalise(answer)

    def equivalent(self, reference: str, answer: str) -> bool:
        with open(self.log_path, "a") as log:
            log.write(f"{answer}\n")
        return normalise(reference) == answer


class FlakyVerifier(CountingVerifier):
    """Raises on "boom", kills its own process on "crash", sleeps on "sleep<N>", asks for 64 GiB
    on "hog"."""

    name = "flaky"

    def equivalent(self, reference: str, answer: str) -> bool:
        if answer == "boom":
            raise RuntimeError("boom")
        if answer == "crash":
            os._exit(3)
        if answer == "hog":
            return len(bytearray(64 * 2**30)) == 0
        if answer.startswith("sleep"):
            time.sleep(float(answer[len("sleep") :]))
        return super().equivalent(reference, answer)


def _checks_logged(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _direct_check(ready, reference: str, answer: str) -> None:
    verifier = MathVerifier()
    verifier.equivalent("1", "1.0")  # import and warm Math-Verify before the clock starts
    ready.set()
    verifier.equivalent(reference, answer)


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(workers=2) as shared:
        yield shared


def test_hanging_answer_really_hangs_math_verify() -> None:
    """Without the pool, checking the answer runs past the limit (so the next test means something)."""
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    process = context.Process(target=_direct_check, args=(ready, "7", "9^{9^{9}}"), daemon=True)
    process.start()
    try:
        assert ready.wait(60), "helper process did not start"
        process.join(LIMIT_S + 1.0)
        assert process.is_alive(), "the direct Math-Verify check finished: pick a harder answer"
    finally:
        process.kill()
        process.join()


def test_hard_limit_kills_hanging_check_and_batch_completes(pool: VerifierPool) -> None:
    references = ["7", "7", "7", r"\frac{1}{2}", "(1,2]", "12"]
    completions = [
        HANGING_ANSWER,
        r"\boxed{7}",
        r"\boxed{x = 7}",
        "The answer is 0.5.",
        r"\boxed{(1, 2]}",
        r"\boxed{21}",
    ]
    kills_before = pool.kills
    results: list = []
    # In a thread, so that a broken hard limit fails the test instead of hanging the test run.
    runner = threading.Thread(
        target=lambda: results.append(
            verify_batch(MathVerifier(), references, completions, timeout_s=LIMIT_S, pool=pool)
        ),
        daemon=True,
    )
    start = time.monotonic()
    runner.start()
    runner.join(LIMIT_S + 8.0)
    elapsed = time.monotonic() - start
    assert not runner.is_alive(), "the hanging check was not cut off"
    verdicts = results[0]

    assert (verdicts[0].status, verdicts[0].correct) == ("timeout", False)
    assert [(v.status, v.correct) for v in verdicts[1:]] == [
        ("ok", True),
        ("ok", True),
        ("ok", True),
        ("ok", True),
        ("ok", False),
    ]
    assert elapsed < LIMIT_S + 8.0, f"batch took {elapsed:.1f}s"
    assert pool.kills == kills_before + 1
    assert pool.n_alive == 2, "the killed worker's replacement starts at once"
    # The killed worker was replaced: the pool keeps working.
    again = verify_batch(MathVerifier(), ["3"], [r"\boxed{3}"], timeout_s=LIMIT_S, pool=pool)
    assert again[0].correct


def test_error_and_crash_statuses_do_not_stop_the_batch(pool: VerifierPool, tmp_path: Path) -> None:
    verifier = FlakyVerifier(str(tmp_path / "log"))
    verdicts = verify_batch(
        verifier,
        ["1"] * 5,
        [r"\boxed{boom}", r"\boxed{crash}", r"\boxed{1}", r"\boxed{2}", "nothing"],
        timeout_s=LIMIT_S,
        pool=pool,
    )
    assert [(v.status, v.correct) for v in verdicts] == [
        ("error", False),
        ("error", False),
        ("ok", True),
        ("ok", False),
        ("no_answer", False),
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_check_that_asks_for_too_much_memory_gets_error_and_is_cached(
    pool: VerifierPool, tmp_path: Path
) -> None:
    verifier = FlakyVerifier(str(tmp_path / "log"))
    cache = VerifyCache()
    completions = [r"\boxed{hog}", r"\boxed{1}", r"\boxed{2}"]
    limit = {"memory_limit_mb": 1024, "cache": cache, "pool": pool}
    verdicts = verify_batch(verifier, ["1"] * 3, completions, **limit)
    assert [(v.status, v.correct) for v in verdicts] == [("error", False), ("ok", True), ("ok", False)]
    assert cache.stats()["entries"] == 3 and cache.checks == 3
    again = verify_batch(verifier, ["1"], [r"\boxed{hog}"], **limit)
    assert again[0].status == "error" and cache.checks == 3  # from the cache


def test_repeated_answer_is_checked_once_and_cache_is_reused(pool: VerifierPool, tmp_path: Path) -> None:
    log = tmp_path / "checks.log"
    verifier = CountingVerifier(str(log))
    cache = VerifyCache()
    # 100 samples, one distinct answer written three ways, plus a wrong one and a no-answer.
    forms = [r"\boxed{42}", r"so $\boxed{ 42 }$.", "The answer is 42."]
    completions = [forms[i % 3] for i in range(100)] + [r"\boxed{41}", "hmm"]
    references = ["42"] * len(completions)

    verdicts = verify_batch(verifier, references, completions, cache=cache, pool=pool)
    assert all(v.correct for v in verdicts[:100])
    assert not verdicts[100].correct and verdicts[101].status == "no_answer"
    assert _checks_logged(log) == 2  # "42" once, "41" once; "hmm" never reaches a worker
    assert cache.checks == 2 and len(cache) == 2

    # A second call with the same cache checks nothing and starts no worker.
    fresh_pool = VerifierPool(workers=2)
    again = verify_batch(verifier, references, completions, cache=cache, pool=fresh_pool)
    assert again == verdicts
    assert _checks_logged(log) == 2
    assert cache.checks == 2 and cache.hits == 2
    assert fresh_pool.n_alive == 0
    fresh_pool.close()


def test_cached_timeout_is_rechecked_only_under_a_larger_limit(pool: VerifierPool, tmp_path: Path) -> None:
    verifier = FlakyVerifier(str(tmp_path / "log"))
    cache = VerifyCache()
    slow = [r"\boxed{sleep1.5}"]
    first = verify_batch(verifier, ["x"], slow, timeout_s=0.5, cache=cache, pool=pool)
    assert first[0].status == "timeout"
    start = time.monotonic()
    second = verify_batch(verifier, ["x"], slow, timeout_s=0.5, cache=cache, pool=pool)
    assert second[0].status == "timeout" and time.monotonic() - start < 0.3  # from the cache
    third = verify_batch(verifier, ["x"], slow, timeout_s=5.0, cache=cache, pool=pool)
    assert (third[0].status, third[0].correct) == ("ok", False)


def test_cheap_verifier_runs_inline_without_workers() -> None:
    unused = VerifierPool(workers=2)
    completions = [r"\boxed{32.0}", "#### 32", r"\boxed{3}"]
    verdicts = verify_batch(ExactVerifier(), ["32"] * 3, completions, pool=unused)
    assert [v.correct for v in verdicts] == [True, True, False]
    assert unused.n_alive == 0


def test_cache_keeps_verifiers_apart(pool: VerifierPool) -> None:
    cache = VerifyCache()
    exact = verify_batch(ExactVerifier(), ["3"], [r"\boxed{x = 3}"], cache=cache)
    math = verify_batch(MathVerifier(), ["3"], [r"\boxed{x = 3}"], cache=cache, pool=pool)
    assert (exact[0].correct, math[0].correct) == (False, True)
    assert len(cache) == 2


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError):
        verify_batch(ExactVerifier(), ["1", "2"], ["1"])
