"""Atomic file writes: readers see the old file or the new one whole, never a torn one.

Every file rlbound writes for users to keep (run.json, Parquet shards, report files) goes
through :func:`atomic_write`: write a temporary sibling, fsync it, rename it into place, fsync the
directory. It does not lock: two writers of the same path race, and the last rename wins.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary sibling of ``path``, then move it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text (newlines written as given)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))
