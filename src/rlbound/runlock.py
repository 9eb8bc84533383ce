"""One writer per run directory: an OS lock on ``RUN/.lock``, held while the run is written.

:func:`lock_run` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``RUN/.lock`` and writes the holder
(pid, host, start time, command) into the file, for the message a second writer gets::

    rlbound: run 'runs/base' is being written by pid 1234 on host h (since 2026-12-01T21:00:00Z);
    wait for it or stop it

The writers take it for as long as they write: the sampler (:class:`rlbound.store.RunWriter`,
so ``rlbound sample``, the lab and ``match-temperature``, for the whole run) and ``rlbound
reverify`` (it writes verdicts and run.json). ``rlbound score`` writes only ``RUN/scores/`` and
takes a lock of its own per score label (``RUN/scores/.<label>.lock``, see :mod:`rlbound.scoring`),
so a run can be scored while it is sampled (the scorer sees the samples stored when it starts),
but one label has one scorer at a time. Readers (``load_run``, analyses, reports) never lock and
never look at the file: it is not a shard, not run.json, and :class:`RunWriter` does not count it
as content of a directory that is "not a run directory".

The OS releases a flock when its process dies, so a ``kill -9`` never leaves a lock that blocks.
A clean release empties the file (and leaves it in place: deleting a lock file races with its
next taker); a holder that died without releasing leaves its record behind, and the next writer
on the same host takes the lock over with a warning naming it.

What it does not cover:

- Two hosts on a shared filesystem whose locks are not shared between clients (NFS mounted with
  ``local_lock=flock``, Lustre with ``localflock``, some FUSE filesystems): each host then gets
  the OS lock. The holder record catches what it can: a record left by another host is never
  taken over (this host cannot tell whether that process still runs); the error says to delete
  ``RUN/.lock`` once it has stopped. Two writers started on two such hosts while neither has
  written its record yet are not caught.
- Filesystems without flock at all (``ENOLCK``/``EOPNOTSUPP``/``ENOSYS``, e.g. Lustre mounted
  without ``flock``): the lock falls back to the record alone (a live pid on this host, or any
  record from another host, refuses). Checking and writing the record is not atomic there, so two
  writers starting in the same instant can both proceed, and a dead holder's pid reused by an
  unrelated process reads as a live holder.
- It is not reentrant: a process that holds a run's lock and asks for it again (a second
  RunWriter, a reverify from inside a sampling job) is refused like any other writer.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from rlbound.errors import RlboundError

LOCK_FILE = ".lock"
"""The lock file's name inside a run directory (readers ignore it)."""

_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lock, as its file records it."""

    pid: int
    host: str
    since: str
    command: str = ""

    @classmethod
    def me(cls) -> "Holder":
        since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(os.getpid(), socket.gethostname(), since, " ".join(sys.argv)[:500])

    def describe(self) -> str:
        if self.pid <= 0:
            return f"an unknown process on host {self.host} (its lock record is unreadable)"
        me = " (this process)" if self.pid == os.getpid() and self.host == socket.gethostname() else ""
        return f"pid {self.pid}{me} on host {self.host} (since {self.since})"

    def alive_here(self) -> bool:
        """Whether this host runs a process with the holder's pid."""
        if self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process
            return True
        return True


def _read_holder(fh: IO[bytes]) -> Holder | None:
    """The record in the lock file, None if it is empty; retried briefly while it is being written."""
    for attempt in range(3):
        fh.seek(0)
        text = fh.read().decode("utf-8", "replace").strip()
        if not text:
            return None
        try:
            data = json.loads(text)
            return Holder(int(data["pid"]), str(data["host"]), str(data["since"]), str(data.get("command", "")))
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05 * (attempt + 1))
    return Holder(0, socket.gethostname(), "?")  # garbled: treated as a holder of this host


class RunLock:
    """An acquired lock on ``lock_path``; :meth:`release` (or leaving the ``with`` block) frees it.

    ``subject`` starts the refusal message, e.g. ``"run 'runs/base' is"`` or ``"scores 'b' of run
    'r' are"``.
    """

    def __init__(self, lock_path: str | Path, subject: str):
        self.path = Path(lock_path)
        self.subject = subject
        self._fh: IO[bytes] | None = None
        self._acquire()

    def _acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+b")  # created if missing, never truncated before we hold it
        try:
            flocked = True
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._busy(_read_holder(fh)) from None
            except OSError as exc:
                if exc.errno not in _NO_FLOCK:
                    raise
                flocked = False  # no flock on this filesystem: the record alone decides
            previous = _read_holder(fh)
            if previous is not None:
                self._check_previous(previous, flocked)
            fh.seek(0)
            fh.truncate()
            fh.write((json.dumps(asdict(Holder.me())) + "\n").encode())
            fh.flush()
        except BaseException:
            fh.close()
            raise
        self._fh = fh

    def _busy(self, holder: Holder | None) -> RlboundError:
        who = holder.describe() if holder else "another process (it has not written its pid yet)"
        return RlboundError(f"{self.subject} being written by {who}; wait for it or stop it")

    def _check_previous(self, previous: Holder, flocked: bool) -> None:
        """Refuse, or warn and take over, when a record is left in a lock we could take."""
        if previous.host != socket.gethostname():
            raise RlboundError(
                f"{self.subject} being written by {previous.describe()}, or was until that process "
                f"stopped without releasing it (this host cannot tell); once it has stopped, "
                f"delete '{self.path}' and rerun"
            )
        if not flocked and previous.alive_here():
            raise self._busy(previous)
        logger.warning(
            "warning: %s no longer being written by %s, which ended without releasing its lock; "
            "taking it over", self.subject, previous.describe(),
        )

    def release(self) -> None:
        """Empty the record and free the lock (idempotent)."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            fh.seek(0)
            fh.truncate()
            fh.flush()
        finally:
            fh.close()  # closing the last descriptor releases the flock

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run(run: str | Path) -> RunLock:
    """Take the one-writer lock of run directory ``run`` (created if missing), or raise
    :class:`RlboundError` naming the process that holds it."""
    return RunLock(Path(run) / LOCK_FILE, f"run '{run}' is")
