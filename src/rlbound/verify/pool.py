"""Batch verification: extraction in-process, deduplicated checks, worker processes with a hard kill.

:func:`verify_batch` grades many completions at once:

1. ``verifier.extract`` runs in the calling process for every completion (no answer → status
   ``no_answer``, never sent anywhere);
2. answers are keyed by ``(reference, verifier.normalise(answer))``; each distinct key is checked
   once, and a :class:`VerifyCache` passed by the caller carries verdicts across calls (at large k
   most samples repeat a handful of answers, so most are never checked at all);
3. the remaining checks (``verifier.equivalent``) run in long-lived worker processes
   (:class:`VerifierPool`). Each check has a hard wall-clock limit: past ``timeout_s`` its worker
   is killed with SIGKILL, the check gets status ``timeout``, a replacement worker starts at once
   (its start-up overlaps the other workers' checks) and the rest of the batch goes on. A check
   that raises gets ``error``; so does one that runs out of memory (each worker's address space
   is capped at ``memory_limit_mb``, 4 GiB by default), and its worker is replaced.

Verifiers that declare ``cheap = True`` (the exact verifier) run inline, with no pool and no
time limit; so does any batch whose keys are all cached, which never starts a worker. Verifiers
that define ``check_many(pairs)`` (the QA judge, which sends its checks to a server concurrently)
get the batch's uncached ``(reference, answer key)`` pairs at once, in the calling process, and
yield ``(index, CheckResult)`` as each finishes; they keep their own time limits, and an
:class:`~rlbound.errors.RlboundError` they raise (the judge server is gone) ends the call with
that error rather than grading anything silently.

How workers start: each is a fresh interpreter (``sys.executable``) running
:mod:`rlbound.verify.worker`, talking to the pool over its standard input and output. It is never
a fork of the caller (a parent that has loaded torch or CUDA is safe) and never imports the
caller's main module, so no ``if __name__ == "__main__":`` guard is needed: call the verifiers
from a script, ``python -``, a notebook, a thread, or a worker process of another framework
(multiprocessing pools, TRL reward functions, Ray tasks). The worker gets the caller's
``sys.path`` (and the directory holding ``rlbound`` on ``PYTHONPATH``), so a verifier defined in
any importable module loads there; one defined in ``__main__`` cannot, and is refused with a
one-line :class:`~rlbound.errors.RlboundError`. A worker loads and warms up its verifier before
it starts a check (within :data:`STARTUP_GRACE_S`); only then does the ``timeout_s`` clock start.
Workers' standard error is discarded, unless this module's logger is at DEBUG when they start;
check tracebacks are logged at DEBUG either way.

The process-wide pool (used when no ``pool`` is given) starts on the first call and is reused by
every later one, so a single :func:`verify_math` pays the worker start-up once per process; it is
closed at interpreter exit. A worker exits by itself when the end of its standard input shows
that the caller is gone, also when the caller was killed.

What this module does not do: it does not sandbox (workers are ordinary processes with the
caller's permissions, fine for parsing maths, not for running untrusted code), its memory limit
is not enforced on macOS (no ``RLIMIT_AS`` there), it does not run on Windows, and it does not
retry timed-out checks (a cached timeout is re-checked only under a larger ``timeout_s``).
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from multiprocessing.connection import wait
from typing import Any

from rlbound.errors import RlboundError
from rlbound.progress import progress
from rlbound.verify.base import (
    STATUS_ERROR,
    STATUS_NO_ANSWER,
    STATUS_OK,
    STATUS_SANDBOX_ERROR,
    STATUS_TIMEOUT,
    CheckResult,
    Verdict,
    Verifier,
    load_verifier,
)
from rlbound.verify.cache import CachedCheck, VerifyCache, verifier_signature
from rlbound.verify.worker import receive_message, send_message

__all__ = [
    "CachedCheck",
    "VerifierPool",
    "VerifyCache",
    "shutdown_default_pool",
    "verify_batch",
    "verify_math",
]

logger = logging.getLogger(__name__)

#: Seconds a fresh worker may take to load (import, ``warm_up()``) its verifier before the check
#: counts as failed; the ``timeout_s`` clock starts only once the verifier is loaded.
STARTUP_GRACE_S = 120.0

#: Default cap on each worker's address space (``RLIMIT_AS``), in MiB; None or 0: no cap.
DEFAULT_MEMORY_LIMIT_MB = 4096

#: Seconds the pool's hard kill waits past a self-limiting verifier's ``max_check_s``.
BACKSTOP_MARGIN_S = 10.0

#: What a worker interpreter runs.
WORKER_CODE = "from rlbound.verify.worker import main; main()"

# --- worker processes ----------------------------------------------------------------------------


def _worker_env() -> dict[str, str]:
    """The caller's environment, with the directory holding ``rlbound`` first on PYTHONPATH.

    So the worker imports this very copy of rlbound, also when the caller found it through
    ``sys.path`` tricks rather than an installation.
    """
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


class _Worker:
    """One worker interpreter, the pipes to it, and the clock of its current check."""

    def __init__(self) -> None:
        if not sys.executable:
            raise RlboundError("cannot start verifier workers: sys.executable is unknown")
        stderr = None if logger.isEnabledFor(logging.DEBUG) else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", WORKER_CODE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=_worker_env(),
                bufsize=0,
            )
        except OSError as exc:
            raise RlboundError(f"cannot start a verifier worker process: {exc}") from None
        self.output = self.process.stdout  # what the pool waits on
        self.sent_at = 0.0
        self.started_at: float | None = None  # when the worker began the current check
        self.ever_started = False  # whether it ever loaded a verifier and began a check
        try:
            send_message(self.process.stdin.fileno(), list(sys.path))
        except OSError:  # it died at once; the next send or read says so
            pass

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, message: tuple) -> None:
        self.sent_at, self.started_at = time.monotonic(), None
        send_message(self.process.stdin.fileno(), message)

    def receive(self) -> Any:
        return receive_message(self.output.fileno())

    def deadline(self, timeout_s: float) -> float:
        if self.started_at is None:
            return self.sent_at + STARTUP_GRACE_S + timeout_s
        return self.started_at + timeout_s

    def kill(self) -> None:
        self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # stuck in the kernel; reaped when the pool next polls it
            pass
        self.close_pipes()

    def close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass

    def stop(self, deadline: float) -> None:
        """Wait until ``deadline`` for the worker to exit (after its input was closed), then kill."""
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
        self.close_pipes()


class VerifierPool:
    """Long-lived worker processes that run ``verifier.equivalent`` under a hard time limit.

    Workers start lazily (only as many as a batch can use) and stay alive between calls;
    :meth:`close` stops them. ``workers`` defaults to ``os.cpu_count()``. The memory limit is
    per call (:meth:`run`, :func:`verify_batch`), like the time limit, so one pool serves callers
    with different limits.
    """

    def __init__(self, workers: int | None = None):
        self.max_workers = max(1, workers or os.cpu_count() or 1)
        self._workers: list[_Worker | None] = []
        self._lock = threading.Lock()
        self.kills = 0  # checks cut off at the time limit, over the pool's life
        _POOLS.add(self)

    @property
    def n_alive(self) -> int:
        return sum(1 for w in self._workers if w is not None and w.alive)

    def _worker(self, index: int) -> _Worker:
        while len(self._workers) <= index:
            self._workers.append(None)
        worker = self._workers[index]
        if worker is None or not worker.alive:
            if worker is not None:
                worker.kill()
            worker = self._workers[index] = _Worker()
        return worker

    def _replace(self, index: int, warm_up: tuple | None = None) -> None:
        """Kill worker ``index``; with a ``warm_up`` message, start its replacement now."""
        worker = self._workers[index]
        if worker is not None:
            worker.kill()
        self._workers[index] = None
        if warm_up is not None:
            # Its interpreter start-up and verifier loading overlap the other workers' checks.
            try:
                self._worker(index).send(warm_up)
            except OSError:  # it died at once; the next check sent to it finds out
                pass

    def _send(self, index: int, message: tuple) -> _Worker:
        worker = self._worker(index)
        try:
            worker.send(message)
        except OSError:  # it died while idle: give the check to a fresh worker
            self._replace(index)
            worker = self._worker(index)
            worker.send(message)
        return worker

    def run(
        self,
        verifier: Verifier,
        checks: Sequence[tuple[str, str]],
        timeout_s: float,
        on_result: Callable[[int, CheckResult], None],
        workers: int | None = None,
        memory_limit_mb: float | None = DEFAULT_MEMORY_LIMIT_MB,
    ) -> None:
        """Run ``verifier.check(reference, answer)`` for each check; report each outcome.

        ``on_result(i, result)`` is called once per check, in completion order.
        ``memory_limit_mb`` caps each worker's address space (None or 0: no cap).
        """
        if not checks:
            return
        blob = _verifier_blob(verifier)
        with self._lock:  # one batch at a time: workers hold per-batch state
            self._run(blob, checks, timeout_s, on_result, workers, memory_limit_mb or None)

    def _run(
        self,
        blob: bytes,
        checks: Sequence[tuple[str, str]],
        timeout_s: float,
        on_result: Callable[[int, CheckResult], None],
        workers: int | None,
        memory_limit_mb: float | None,
    ) -> None:
        n_workers = min(len(checks), max(1, workers or self.max_workers))
        warm_up = (None, blob, None, None, timeout_s, memory_limit_mb)  # for replacements
        pending = deque(range(len(checks)))
        busy: dict[int, tuple[_Worker, int]] = {}  # worker index -> (worker, check index)

        def finish(index: int, result: CheckResult, *, replace: bool) -> None:
            _, task = busy.pop(index)
            if replace:
                self._replace(index, warm_up)
            on_result(task, result)

        try:
            while pending or busy:
                for index in range(n_workers):
                    if index in busy or not pending:
                        continue
                    task = pending.popleft()
                    message = (task, blob, *checks[task], timeout_s, memory_limit_mb)
                    busy[index] = (self._send(index, message), task)
                next_deadline = min(w.deadline(timeout_s) for w, _ in busy.values())
                by_output = {w.output: index for index, (w, _) in busy.items()}
                for output in wait(list(by_output), timeout=max(0.0, next_deadline - time.monotonic())):
                    index = by_output[output]  # type: ignore[index]
                    self._read(index, busy[index][0], finish)
                now = time.monotonic()
                for index, (worker, _) in list(busy.items()):
                    if now >= worker.deadline(timeout_s):
                        self.kills += 1
                        # Killed before it could even load the verifier: that is an error.
                        late = STATUS_TIMEOUT if worker.started_at is not None else STATUS_ERROR
                        finish(index, CheckResult(False, late), replace=True)
        finally:
            # Interrupted (Ctrl-C, a failing callback, an error): busy workers hold stale checks.
            for index in busy:
                self._replace(index)

    def _read(self, index: int, worker: _Worker, finish: Callable[..., None]) -> None:
        """Handle every message waiting from ``worker``: ``started`` and/or ``done``."""
        while True:
            try:
                message = worker.receive()
            except (EOFError, OSError):
                if not worker.ever_started:
                    try:
                        code = worker.process.wait(timeout=1)
                    except subprocess.TimeoutExpired:
                        code = None
                    raise RlboundError(
                        f"a verifier worker process exited before it could start a check (exit code "
                        f"{code}); set the log level of {__name__} to DEBUG to see its error output"
                    ) from None
                logger.warning("a verifier worker died during a check; status 'error'")
                finish(index, CheckResult(False, STATUS_ERROR), replace=True)
                return
            kind, task = message[0], message[1]
            if kind == "load_error":
                raise RlboundError(
                    f"a verifier worker process cannot load the verifier ({message[2]}): define its "
                    "class in an importable module (not in __main__ or a notebook), and make sure "
                    "it loads within memory_limit_mb"
                )
            if kind == "started":
                worker.started_at = time.monotonic()
                worker.ever_started = True
                if not _has_data(worker):
                    return
                continue
            _, _, status, correct, detail, retire, correct_base = message
            if detail:
                logger.debug("verifier check %s: %s\n%s", task, status, detail)
            finish(index, CheckResult(bool(correct), status, correct_base), replace=retire)
            return

    def close(self) -> None:
        """Stop every worker (a later :meth:`run` starts fresh ones); waits at most about 1 s."""
        workers = [w for w in self._workers if w is not None]
        self._workers = []
        for worker in workers:  # end of input: each worker exits as soon as it is idle
            try:
                worker.process.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + 1.0
        for worker in workers:
            worker.stop(deadline)

    def _forget_after_fork(self) -> None:
        # In a forked child: drop our copies of the pipes (so the workers still see the end of
        # their input when the parent goes) and start fresh workers on first use.
        for worker in self._workers:
            if worker is not None:
                worker.close_pipes()
        self._workers = []
        self._lock = threading.Lock()

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _has_data(worker: _Worker) -> bool:
    return bool(wait([worker.output], timeout=0))


def _verifier_blob(verifier: Verifier) -> bytes:
    """The pickled verifier, or a one-line error saying why worker processes could not load it."""
    cls = type(verifier)
    where = f"{cls.__module__}.{cls.__qualname__}"
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise RlboundError(
            f"the verifier class {where} is defined in the main script (or inside a function), "
            "which verifier worker processes cannot import; define it in an importable module"
        )
    try:
        return pickle.dumps(verifier)
    except Exception as exc:  # noqa: BLE001 - any pickling failure
        raise RlboundError(f"the verifier {where} cannot be sent to a worker process: {exc}") from None


_POOLS: weakref.WeakSet[VerifierPool] = weakref.WeakSet()
_DEFAULT_POOL: VerifierPool | None = None
_DEFAULT_POOL_LOCK = threading.Lock()


def default_pool() -> VerifierPool:
    """The process-wide pool used by :func:`verify_batch` (created on first use, then reused)."""
    global _DEFAULT_POOL
    with _DEFAULT_POOL_LOCK:
        if _DEFAULT_POOL is None:
            _DEFAULT_POOL = VerifierPool()
        return _DEFAULT_POOL


def shutdown_default_pool() -> None:
    """Stop the workers of the process-wide pool."""
    global _DEFAULT_POOL
    pool, _DEFAULT_POOL = _DEFAULT_POOL, None
    if pool is not None:
        pool.close()


@atexit.register
def _close_all_pools() -> None:
    # Pools nobody closed: stop their workers now rather than leave them to notice our exit.
    shutdown_default_pool()
    for pool in list(_POOLS):
        pool.close()


def _forget_pools_in_child() -> None:
    # A forked child must not talk to its parent's workers; it starts its own on first use.
    global _DEFAULT_POOL, _DEFAULT_POOL_LOCK
    _DEFAULT_POOL, _DEFAULT_POOL_LOCK = None, threading.Lock()
    for pool in list(_POOLS):
        pool._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_in_child)


# --- batch verification --------------------------------------------------------------------------


def _check_inline(verifier: Verifier, reference: str, answer: str) -> CheckResult:
    try:
        return verifier.check(reference, answer)
    except TimeoutError:
        return CheckResult(False, STATUS_TIMEOUT)
    except Exception:  # noqa: BLE001 - graded as an error, like in a worker
        logger.debug("verifier check raised", exc_info=True)
        return CheckResult(False, STATUS_ERROR)


def verify_batch(
    verifier: Verifier | str,
    references: Sequence[str],
    completions: Sequence[str],
    *,
    timeout_s: float = 5.0,
    workers: int | None = None,
    cache: VerifyCache | None = None,
    progress_label: str | None = None,
    pool: VerifierPool | None = None,
    memory_limit_mb: float | None = DEFAULT_MEMORY_LIMIT_MB,
) -> list[Verdict]:
    """Grade ``completions[i]`` against ``references[i]``; one :class:`Verdict` per completion.

    Args:
        verifier: a verifier instance, or a registered name (``"math"``, ``"exact"``).
        timeout_s: hard wall-clock limit per distinct check (status ``timeout`` past it).
        workers: worker processes to use (default ``os.cpu_count()``).
        cache: a :class:`VerifyCache` to read and fill; reuse it across calls of one run.
        progress_label: show a progress bar with this label.
        pool: a :class:`VerifierPool` to use instead of the process-wide one.
        memory_limit_mb: cap on each worker's address space (default 4 GiB; None or 0: no cap).
            A check that runs out of it gets status ``error``.
    """
    if isinstance(verifier, str):
        verifier = load_verifier(verifier)
    references, completions = list(references), list(completions)
    if len(references) != len(completions):
        raise ValueError(f"{len(references)} references but {len(completions)} completions")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if memory_limit_mb is not None and memory_limit_mb < 0:
        raise ValueError(f"memory_limit_mb must be positive (or None), got {memory_limit_mb}")
    cache = VerifyCache() if cache is None else cache
    signature = verifier_signature(verifier)
    if verifier.max_check_s:  # the verifier enforces its own limits; the hard kill is a backstop
        timeout_s = max(timeout_s, verifier.max_check_s + BACKSTOP_MARGIN_S)
    if workers is None:
        workers = getattr(verifier, "workers", None)

    verifier.prepare()
    answers = [verifier.extract(completion) for completion in completions]
    groups: dict[tuple[str, str], list[int]] = {}
    outcomes: list[CheckResult | None] = [None] * len(completions)
    for i, (reference, answer) in enumerate(zip(references, answers)):
        key = verifier.normalise(answer) if answer is not None else ""
        if not key:
            outcomes[i] = CheckResult(False, STATUS_NO_ANSWER, False if verifier.has_base_subset(reference) else None)
        else:
            groups.setdefault((reference, key), []).append(i)

    bar_context: Any = (
        progress(progress_label, total=len(completions), unit="samples")
        if progress_label
        else nullcontext(_SilentBar())
    )
    with bar_context as bar:
        bar.advance(sum(1 for outcome in outcomes if outcome is not None))
        to_check: list[tuple[str, str]] = []
        for pair, members in groups.items():
            entry = cache.lookup((signature, *pair), timeout_s)
            if entry is None:
                to_check.append(pair)
                continue
            for i in members:
                outcomes[i] = CheckResult(entry.correct, entry.status, entry.correct_base)
            bar.advance(len(members))

        def record(task: int, result: CheckResult) -> None:
            pair = to_check[task]
            cache.checks += 1
            if result.status != STATUS_SANDBOX_ERROR:  # not the program's doing: check again later
                cache[(signature, *pair)] = CachedCheck(result.correct, result.status, timeout_s,
                                                        result.correct_base)
            members = groups[pair]
            for i in members:
                outcomes[i] = result
            bar.advance(len(members))

        if getattr(verifier, "cheap", False):
            for task, (reference, key) in enumerate(to_check):
                record(task, _check_inline(verifier, reference, key))
        elif to_check and hasattr(verifier, "check_many"):
            for task, result in verifier.check_many(to_check):
                record(task, result)
        elif to_check:
            (pool or default_pool()).run(
                verifier, to_check, timeout_s, record, workers=workers, memory_limit_mb=memory_limit_mb
            )

    verdicts = []
    for answer, outcome in zip(answers, outcomes):
        assert outcome is not None, "every completion gets an outcome"
        ok = outcome.status == STATUS_OK
        # The base verdict stands on its own: a program may pass the base tests and then time out.
        base = None if outcome.correct_base is None else bool(outcome.correct_base)
        verdicts.append(Verdict(answer=answer, correct=bool(outcome.correct and ok), status=outcome.status,
                                correct_base=base))
    return verdicts


def verify_math(reference: str, completion: str, timeout_s: float = 5.0) -> Verdict:
    """Grade one completion against a reference answer with the default "math" verifier.

    The check runs in a worker of the process-wide pool (started by the first call, reused by the
    next ones) under a hard wall-clock limit of ``timeout_s`` seconds (status ``"timeout"`` past
    it). For many completions use :func:`verify_batch`, which deduplicates and caches.
    """
    return verify_batch("math", [reference], [completion], timeout_s=timeout_s)[0]


class _SilentBar:
    def advance(self, amount: float = 1) -> None:
        pass
