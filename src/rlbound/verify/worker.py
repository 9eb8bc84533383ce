"""The loop of one verification worker process (started and driven by :mod:`rlbound.verify.pool`).

Each worker is its own interpreter, started as
``python -c "from rlbound.verify.worker import main; main()"`` with pipes for standard input and
output. It never imports the caller's main module, so callers need no ``__main__`` guard. The two
sides speak length-prefixed pickles (:func:`send_message`, :func:`receive_message`):

* parent → worker: first the parent's ``sys.path`` (so the worker imports what the parent can),
  then checks ``(task, verifier_blob, reference, answer, timeout_s, memory_limit_mb)``; ``task``
  None means "load this verifier now, no check" (a replacement worker warming up); ``None`` or
  the end of standard input means "exit".
* worker → parent: ``("started", task)`` once the verifier is loaded and warmed up (the time
  limit starts then), then ``("done", task, status, correct, detail, retire, correct_base)``; or
  ``("load_error", task, detail)`` if the verifier cannot be unpickled here. ``retire`` says the
  worker exits after this check (it ran out of memory) and the parent should start another.

Limits set here: the address space (``RLIMIT_AS``, ``memory_limit_mb``), before the verifier
loads. A check that runs out of it (a MemoryError, or growth by half or more of the room the limit
left it, since Math-Verify swallows MemoryError and answers "not equal") gets ``error`` and retires
the worker. The growth rule reads ``/proc`` (Linux only).
During each check, a CPU-time backstop (``RLIMIT_CPU``): the check's ``timeout_s`` plus a margin.
The parent kills a worker at ``timeout_s`` wall-clock time, which always comes first; the backstop
only ends a worker whose parent died mid-check, so that no orphan computes for hours.

What it does not do: it is no sandbox (a verifier runs with the caller's permissions, file system
and network), it does not enforce the wall-clock limit itself (the parent does, with SIGKILL), and
``RLIMIT_AS`` is not enforced on macOS.
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import struct
import sys
import traceback
from typing import Any

try:
    import resource
except ImportError:  # pragma: no cover - Windows has no resource limits
    resource = None  # type: ignore[assignment]

__all__ = ["main", "receive_message", "send_message"]

_HEADER = struct.Struct(">Q")

#: CPU seconds a check may run past its ``timeout_s`` before the kernel ends an orphaned worker.
CPU_BACKSTOP_MARGIN_S = 2


def send_message(fd: int, message: Any) -> None:
    """Write ``message`` to file descriptor ``fd`` as an 8-byte length and a pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def receive_message(fd: int) -> Any:
    """Read one message written by :func:`send_message`; EOFError at the end of the stream."""
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size))
    return pickle.loads(_read_exactly(fd, size))


def _read_exactly(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError("the other side closed the pipe")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


_STARTING_SOFT_LIMITS: dict[str, int] = {}


def _set_soft_limit(name: str, soft: int | None) -> None:
    """Lower the soft limit ``name`` to ``soft`` (None: back to where it started); best effort.

    Never above the soft limit the worker started with, so a caller's own ``ulimit`` still holds.
    """
    if resource is None or not hasattr(resource, name):
        return
    which = getattr(resource, name)
    try:
        current, hard = resource.getrlimit(which)
        starting = _STARTING_SOFT_LIMITS.setdefault(name, current)
        if soft is None or (starting != resource.RLIM_INFINITY and soft > starting):
            soft = starting
        if soft != current:
            resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError):  # e.g. macOS refuses some RLIMIT_AS values
        pass


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_memory_mb() -> float | None:
    """The most address space this process has held (``VmPeak``, what RLIMIT_AS caps), in MiB.

    None where ``/proc`` does not say (not Linux). Not ``ru_maxrss``: a child inherits its
    parent's there, even across exec.
    """
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmPeak:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _load(blob: bytes) -> Any:
    verifier = pickle.loads(blob)
    # Lazy imports and parser set-up happen here, before the check's clock starts.
    warm_up = getattr(verifier, "warm_up", None)
    if callable(warm_up):
        try:
            warm_up()
        except Exception:  # noqa: BLE001 - a failed warm-up only costs time later
            pass
    return verifier


def _check(verifier: Any, reference: str, answer: str, timeout_s: float, memory_limit_mb: float | None):
    """Run one check: ``(status, correct, detail, retire, correct_base)``."""
    peak_before = _peak_memory_mb() if memory_limit_mb else None
    if resource is not None:
        _set_soft_limit("RLIMIT_CPU", math.ceil(_cpu_seconds() + timeout_s) + CPU_BACKSTOP_MARGIN_S)
    out_of_memory = False
    correct_base = None
    try:
        result = verifier.check(reference, answer)
        correct, status, detail, correct_base = bool(result.correct), result.status, "", result.correct_base
    except TimeoutError:
        correct, status, detail = False, "timeout", traceback.format_exc()
    except BaseException as exc:  # noqa: BLE001 - MemoryError, Math-Verify's TimeoutException, ...
        correct, status, detail = False, "error", traceback.format_exc()
        out_of_memory = isinstance(exc, MemoryError)
    finally:
        _set_soft_limit("RLIMIT_CPU", None)
    if peak_before is not None and not out_of_memory:
        # Math-Verify catches MemoryError itself (its comparisons sit under ``except Exception``)
        # and answers "not equal". An allocation that grows by doubling (big integers, lists)
        # fails only when it would pass the limit, so such a check has taken most of the room the
        # limit left it (87-100 % measured): half or more of that room counts as an error.
        peak = _peak_memory_mb() or 0.0
        if peak - peak_before >= (memory_limit_mb - peak_before) / 2:
            out_of_memory = True
            detail = f"the check grew to {peak:.0f} MiB of its {memory_limit_mb:g} MiB memory limit"
    if out_of_memory:
        # Retire this worker: a fresh one starts clean (Python rarely gives freed memory back).
        return "error", False, detail[-4000:], True, None
    return status, correct, detail[-4000:], False, correct_base


def main() -> None:
    """Serve checks from the parent until it closes standard input (or sends None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    # Keep the pipes to ourselves: a verifier that prints writes to standard error instead of
    # into the protocol, and one that reads standard input reads nothing.
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    _set_soft_limit("RLIMIT_CORE", 0)  # the CPU backstop must not leave core files behind

    def reply(message: tuple) -> None:
        try:
            send_message(replies, message)
        except OSError:  # the parent is gone
            os._exit(0)

    try:
        parent_path = receive_message(requests)
    except (EOFError, OSError):
        os._exit(0)
    sys.path[:] = parent_path + [entry for entry in sys.path if entry not in parent_path]

    loaded_blob, verifier = None, None
    while True:
        try:
            message = receive_message(requests)
        except (EOFError, OSError):
            os._exit(0)  # the parent closed the pipe or died: nothing left to do
        if message is None:
            os._exit(0)
        task, blob, reference, answer, timeout_s, memory_limit_mb = message
        _set_soft_limit("RLIMIT_AS", int(memory_limit_mb * 2**20) if memory_limit_mb else None)
        if blob != loaded_blob:
            try:
                verifier, loaded_blob = _load(blob), blob
            except BaseException as exc:  # noqa: BLE001 - reported, the parent decides
                verifier = loaded_blob = None
                if task is not None:
                    reply(("load_error", task, f"{type(exc).__name__}: {exc}"))
                continue
        if task is None:
            continue
        reply(("started", task))
        status, correct, detail, retire, correct_base = _check(
            verifier, reference, answer, timeout_s, memory_limit_mb)
        reply(("done", task, status, correct, detail, retire, correct_base))
        if retire:
            os._exit(0)
