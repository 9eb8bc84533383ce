"""Batch verification: extraction in-process, deduplicated checks, worker processes with a hard kill.

:func:`verify_batch` grades many completions at once:

1. ``verifier.extract`` runs in the calling process for every completion (no answer → status
   ``no_answer``, never sent anywhere);
2. answers are keyed by ``(reference, verifier.normalise(answer))``; each distinct key is checked
   once, and a :class:`VerifyCache` passed by the caller carries verdicts across calls (at large k
   most samples repeat a handful of answers, so most are never checked at all);
3. the remaining checks (``verifier.equivalent``) run in long-lived worker processes
   (:class:`VerifierPool`, "forkserver" context, "spawn" where there is none, so a parent that has
   loaded torch or CUDA is never forked). Each check has a hard wall-clock limit: past
   ``timeout_s`` its worker is killed with SIGKILL, the check gets status ``timeout``, a fresh
   worker takes its place and the rest of the batch goes on. A check that raises gets ``error``.

Verifiers that declare ``cheap = True`` (the exact verifier) run inline, with no pool and no
time limit; so does any batch whose keys are all cached, which never starts a worker.

Workers import the caller's main module (as with any "spawn"/"forkserver" multiprocessing), so a
script that calls :func:`verify_batch` must do so under ``if __name__ == "__main__":``; without the
guard the workers cannot start and an :class:`~rlbound.errors.RlboundError` says so.

What this module does not do: it does not sandbox (workers are ordinary processes with the
parent's permissions, fine for parsing maths, not for running untrusted code), it does not bound
memory, and it does not retry timed-out checks (a cached timeout is re-checked only under a
larger ``timeout_s``).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from rlbound.errors import RlboundError
from rlbound.progress import progress
from rlbound.verify.base import (
    STATUS_ERROR,
    STATUS_NO_ANSWER,
    STATUS_OK,
    STATUS_TIMEOUT,
    Verdict,
    Verifier,
    load_verifier,
)

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

#: Set while worker processes start: verifier modules that see it (the forkserver imports them
#: before forking workers) pay their lazy set-up at import, so every worker starts warm.
WARM_UP_ENV = "RLBOUND_VERIFY_WARM_UP"

CacheKey = tuple[str, str, str]  # (verifier signature, reference, normalised answer)


# --- cache ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedCheck:
    """The outcome of one check: ``correct``, ``status`` and the limit it ran under."""

    correct: bool
    status: str
    timeout_s: float | None = None


class VerifyCache:
    """Check outcomes keyed by ``(verifier signature, reference, normalised answer)``; dict-like.

    One cache can serve several verifiers (the signature keeps them apart). ``hits`` and
    ``misses`` count lookups by distinct key, ``checks`` counts the checks actually run.
    """

    def __init__(self) -> None:
        self._entries: dict[CacheKey, CachedCheck] = {}
        self.hits = 0
        self.misses = 0
        self.checks = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __getitem__(self, key: CacheKey) -> CachedCheck:
        return self._entries[key]

    def __setitem__(self, key: CacheKey, value: CachedCheck) -> None:
        self._entries[key] = value

    def __iter__(self) -> Iterator[CacheKey]:
        return iter(self._entries)

    def get(self, key: CacheKey, default: CachedCheck | None = None) -> CachedCheck | None:
        return self._entries.get(key, default)

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = self.checks = 0

    def lookup(self, key: CacheKey, timeout_s: float | None) -> CachedCheck | None:
        """The cached outcome, unless it is a timeout under a smaller limit than ``timeout_s``."""
        entry = self._entries.get(key)
        if entry is not None and entry.status == STATUS_TIMEOUT and timeout_s is not None:
            if entry.timeout_s is None or entry.timeout_s < timeout_s:
                entry = None
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def stats(self) -> dict[str, int]:
        return {"entries": len(self), "hits": self.hits, "misses": self.misses, "checks": self.checks}


def verifier_signature(verifier: Verifier) -> str:
    """A string that differs between verifiers (or settings) that may disagree on a verdict."""
    settings = sorted((str(k), repr(v)) for k, v in verifier.settings().items())
    cls = type(verifier)
    return f"{cls.__module__}.{cls.__qualname__}:{verifier.name}:{settings}"


# --- worker processes ----------------------------------------------------------------------------


def _worker_main(conn: Connection) -> None:
    """Loop of a worker process: receive a check, report ``started``, run it, report the result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    verifiers: dict[bytes, Verifier] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task_id, blob, reference, answer = message
        try:
            verifier = verifiers.get(blob)
            if verifier is None:
                verifier = pickle.loads(blob)
                verifiers.clear()
                verifiers[blob] = verifier
                # Lazy imports and parser set-up happen here, before the check's clock starts.
                warm_up = getattr(verifier, "warm_up", None)
                if callable(warm_up):
                    try:
                        warm_up()
                    except Exception:  # noqa: BLE001 - a failed warm-up only costs time later
                        pass
        except BaseException as exc:  # noqa: BLE001 - report, never die on a bad verifier
            conn.send(("done", task_id, STATUS_ERROR, False, f"cannot load verifier: {exc!r}"))
            continue
        conn.send(("started", task_id))
        try:
            correct, status, detail = bool(verifier.equivalent(reference, answer)), STATUS_OK, ""
        except TimeoutError as exc:
            correct, status, detail = False, STATUS_TIMEOUT, repr(exc)
        except BaseException as exc:  # noqa: BLE001 - e.g. Math-Verify's TimeoutException
            correct, status, detail = False, STATUS_ERROR, f"{type(exc).__name__}: {exc}"[:500]
        conn.send(("done", task_id, status, correct, detail))


class _Worker:
    def __init__(self, context: Any):
        parent_conn, child_conn = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_worker_main, args=(child_conn,), daemon=True, name="rlbound-verify-worker"
        )
        previous = os.environ.get(WARM_UP_ENV)
        os.environ[WARM_UP_ENV] = "1"  # inherited by the forkserver if this start launches it
        try:
            self.process.start()
        finally:
            if previous is None:
                del os.environ[WARM_UP_ENV]
            else:
                os.environ[WARM_UP_ENV] = previous
        child_conn.close()
        self.conn: Connection = parent_conn
        self.sent_at = 0.0
        self.started_at: float | None = None  # when the worker began the current check
        self.ever_started = False  # whether it ever loaded a verifier and began a check

    def send(self, message: tuple) -> None:
        self.sent_at, self.started_at = time.monotonic(), None
        self.conn.send(message)

    def deadline(self, timeout_s: float) -> float:
        if self.started_at is None:
            return self.sent_at + STARTUP_GRACE_S + timeout_s
        return self.started_at + timeout_s

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.join(timeout=5)
        finally:
            self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=1)
        if self.process.is_alive():
            self.kill()
        else:
            self.conn.close()


def _context(preload: Sequence[str]) -> Any:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        # Workers fork from a server that has already imported the verifier's modules, so a
        # replacement worker (after a kill) is ready in milliseconds. No effect if the server
        # was already started by someone else.
        context.set_forkserver_preload(["__main__", "rlbound.verify", *preload])
        return context
    return multiprocessing.get_context("spawn")


class VerifierPool:
    """Long-lived worker processes that run ``verifier.equivalent`` under a hard time limit.

    Workers start lazily (only as many as a batch can use) and stay alive between calls;
    :meth:`close` stops them. ``workers`` defaults to ``os.cpu_count()``.
    """

    def __init__(self, workers: int | None = None):
        self.max_workers = max(1, workers or os.cpu_count() or 1)
        self._workers: list[_Worker | None] = []
        self._context: Any = None
        self._lock = threading.Lock()
        self.kills = 0  # checks cut off at the time limit, over the pool's life

    @property
    def n_alive(self) -> int:
        return sum(1 for w in self._workers if w is not None and w.process.is_alive())

    def _worker(self, index: int, preload: Sequence[str]) -> _Worker:
        if self._context is None:
            self._context = _context(preload)
        while len(self._workers) <= index:
            self._workers.append(None)
        worker = self._workers[index]
        if worker is None or not worker.process.is_alive():
            if worker is not None:
                worker.kill()
            worker = self._workers[index] = _Worker(self._context)
        return worker

    def _replace(self, index: int) -> None:
        worker = self._workers[index]
        if worker is not None:
            worker.kill()
        self._workers[index] = None

    def run(
        self,
        verifier: Verifier,
        checks: Sequence[tuple[str, str]],
        timeout_s: float,
        on_result: Callable[[int, bool, str], None],
        workers: int | None = None,
    ) -> None:
        """Run ``verifier.equivalent(reference, answer)`` for each check; report each outcome.

        ``on_result(i, correct, status)`` is called once per check, in completion order.
        """
        if not checks:
            return
        with self._lock:  # one batch at a time: workers hold per-batch state
            self._run(verifier, checks, timeout_s, on_result, workers)

    def _run(
        self,
        verifier: Verifier,
        checks: Sequence[tuple[str, str]],
        timeout_s: float,
        on_result: Callable[[int, bool, str], None],
        workers: int | None,
    ) -> None:
        blob = pickle.dumps(verifier)
        preload = tuple(getattr(verifier, "preload_modules", ()))
        n_workers = min(len(checks), max(1, workers or self.max_workers))
        pending = deque(range(len(checks)))
        busy: dict[int, tuple[_Worker, int]] = {}  # worker index -> (worker, check index)

        def finish(index: int, correct: bool, status: str, *, kill: bool) -> None:
            _, task = busy.pop(index)
            if kill:
                self._replace(index)
            on_result(task, correct, status)

        try:
            while pending or busy:
                for index in range(n_workers):
                    if index in busy or not pending:
                        continue
                    worker = self._worker(index, preload)
                    task = pending.popleft()
                    busy[index] = (worker, task)
                    try:
                        worker.send((task, blob, *checks[task]))
                    except OSError:  # the worker died between batches
                        finish(index, False, STATUS_ERROR, kill=True)
                if not busy:
                    continue
                next_deadline = min(w.deadline(timeout_s) for w, _ in busy.values())
                by_conn = {w.conn: index for index, (w, _) in busy.items()}
                for conn in wait(list(by_conn), timeout=max(0.0, next_deadline - time.monotonic())):
                    index = by_conn[conn]  # type: ignore[index]
                    self._read(index, busy[index][0], finish)
                now = time.monotonic()
                for index, (worker, _) in list(busy.items()):
                    if now >= worker.deadline(timeout_s):
                        self.kills += 1
                        # Killed before it could even load the verifier: that is an error.
                        late = STATUS_TIMEOUT if worker.started_at is not None else STATUS_ERROR
                        finish(index, False, late, kill=True)
        finally:
            # Interrupted (Ctrl-C, a failing callback): workers still busy hold stale checks.
            for index in busy:
                self._replace(index)

    def _read(self, index: int, worker: _Worker, finish: Callable[..., None]) -> None:
        """Handle every message waiting from ``worker``: ``started`` and/or ``done``."""
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                if not worker.ever_started:
                    worker.process.join(timeout=1)
                    raise RlboundError(
                        f"a verifier worker process exited before it could start (exit code "
                        f"{worker.process.exitcode}); if you call rlbound from a script, put the "
                        "calls under `if __name__ == \"__main__\":` (workers import the main module)"
                    ) from None
                logger.warning("a verifier worker died during a check; status 'error'")
                finish(index, False, STATUS_ERROR, kill=True)
                return
            if message[0] == "started":
                worker.started_at = time.monotonic()
                worker.ever_started = True
                if not worker.conn.poll():
                    return
                continue
            _, task, status, correct, detail = message
            if detail:
                logger.debug("verifier check %s: %s (%s)", task, status, detail)
            finish(index, bool(correct), status, kill=False)
            return

    def close(self) -> None:
        """Stop every worker (a later :meth:`run` starts fresh ones)."""
        for worker in self._workers:
            if worker is not None:
                worker.stop()
        self._workers = []

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_DEFAULT_POOL: VerifierPool | None = None


def default_pool() -> VerifierPool:
    """The process-wide pool used by :func:`verify_batch` (created on first use)."""
    global _DEFAULT_POOL
    if _DEFAULT_POOL is None:
        _DEFAULT_POOL = VerifierPool()
        atexit.register(shutdown_default_pool)
    return _DEFAULT_POOL


def shutdown_default_pool() -> None:
    """Stop the workers of the process-wide pool."""
    global _DEFAULT_POOL
    if _DEFAULT_POOL is not None:
        _DEFAULT_POOL.close()
        _DEFAULT_POOL = None


def _forget_default_pool_in_child() -> None:
    # A forked child must not talk to its parent's workers; it starts its own on first use.
    global _DEFAULT_POOL
    _DEFAULT_POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_default_pool_in_child)


# --- batch verification --------------------------------------------------------------------------


def _check_inline(verifier: Verifier, reference: str, answer: str) -> tuple[bool, str]:
    try:
        return bool(verifier.equivalent(reference, answer)), STATUS_OK
    except TimeoutError:
        return False, STATUS_TIMEOUT
    except Exception:  # noqa: BLE001 - graded as an error, like in a worker
        logger.debug("verifier check raised", exc_info=True)
        return False, STATUS_ERROR


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
) -> list[Verdict]:
    """Grade ``completions[i]`` against ``references[i]``; one :class:`Verdict` per completion.

    Args:
        verifier: a verifier instance, or a registered name (``"math"``, ``"exact"``).
        timeout_s: hard wall-clock limit per distinct check (status ``timeout`` past it).
        workers: worker processes to use (default ``os.cpu_count()``).
        cache: a :class:`VerifyCache` to read and fill; reuse it across calls of one run.
        progress_label: show a progress bar with this label.
        pool: a :class:`VerifierPool` to use instead of the process-wide one.
    """
    if isinstance(verifier, str):
        verifier = load_verifier(verifier)
    references, completions = list(references), list(completions)
    if len(references) != len(completions):
        raise ValueError(f"{len(references)} references but {len(completions)} completions")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    cache = VerifyCache() if cache is None else cache
    signature = verifier_signature(verifier)

    answers = [verifier.extract(completion) for completion in completions]
    groups: dict[tuple[str, str], list[int]] = {}
    outcomes: list[tuple[bool, str] | None] = [None] * len(completions)
    for i, (reference, answer) in enumerate(zip(references, answers)):
        key = verifier.normalise(answer) if answer is not None else ""
        if not key:
            outcomes[i] = (False, STATUS_NO_ANSWER)
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
                outcomes[i] = (entry.correct, entry.status)
            bar.advance(len(members))

        def record(task: int, correct: bool, status: str) -> None:
            pair = to_check[task]
            cache.checks += 1
            cache[(signature, *pair)] = CachedCheck(correct, status, timeout_s)
            members = groups[pair]
            for i in members:
                outcomes[i] = (correct, status)
            bar.advance(len(members))

        if getattr(verifier, "cheap", False):
            for task, (reference, key) in enumerate(to_check):
                record(task, *_check_inline(verifier, reference, key))
        elif to_check:
            (pool or default_pool()).run(verifier, to_check, timeout_s, record, workers=workers)

    verdicts = []
    for answer, outcome in zip(answers, outcomes):
        assert outcome is not None, "every completion gets an outcome"
        correct, status = outcome
        verdicts.append(Verdict(answer=answer, correct=correct and status == STATUS_OK, status=status))
    return verdicts


def verify_math(reference: str, completion: str, timeout_s: float = 5.0) -> Verdict:
    """Grade one completion against a reference answer with the default "math" verifier.

    The check runs in a pool worker under a hard wall-clock limit of ``timeout_s`` seconds
    (status ``"timeout"`` past it). For many completions use :func:`verify_batch`, which
    deduplicates and caches.
    """
    return verify_batch("math", [reference], [completion], timeout_s=timeout_s)[0]


class _SilentBar:
    def advance(self, amount: float = 1) -> None:
        pass
