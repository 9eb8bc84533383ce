"""Progress bars for every long operation (rich), with rate and ETA; silent when quiet.

Use :func:`progress` as a context manager::

    with progress("sampling", total=n_samples, unit="samples") as bar:
        ...
        bar.advance(len(batch))

The CLI's ``--quiet`` calls :func:`set_quiet`; library users can do the same. Bars draw on stderr
so that ``--json`` output on stdout stays clean.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

_QUIET = False
_HEARTBEAT: Callable[[], None] | None = None
_console = Console(stderr=True)


def set_heartbeat(callback: Callable[[], None] | None) -> None:
    """Call ``callback`` (cheap, no arguments) at every advance of every bar of this process,
    drawn or not, in the thread that advances it; None removes it. The lab's worker processes
    use it to take up the cores a finished stage beside them left (every long loop advances a bar)."""
    global _HEARTBEAT
    _HEARTBEAT = callback


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) all progress bars of this process."""
    global _QUIET
    _QUIET = quiet


def is_quiet() -> bool:
    return _QUIET


def note(text: str) -> None:
    """Print a status line (rich markup) on stderr, unless quiet."""
    if not _QUIET:
        _console.print(text)


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:  # type: ignore[override]
        speed = task.finished_speed or task.speed
        if not speed:
            return Text(f"? {self.unit}/s", style="progress.data.speed")
        return Text(f"{speed:,.1f} {self.unit}/s", style="progress.data.speed")


class Bar:
    """A handle on one progress bar: ``advance(k)``, ``set_postfix(text)``."""

    def __init__(self, progress: Progress | None, task_id: int | None):
        self._progress = progress
        self._task_id = task_id
        self.completed = 0
        self.started = time.perf_counter()

    def advance(self, amount: float = 1) -> None:
        self.completed += amount
        if _HEARTBEAT is not None:
            _HEARTBEAT()
        if self._progress is not None:
            self._progress.advance(self._task_id, amount)

    def set_postfix(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task_id, postfix=text)


@contextmanager
def progress(description: str, total: float | None, unit: str = "it") -> Iterator[Bar]:
    """A progress bar with count, rate and ETA (nothing is drawn when quiet)."""
    if _QUIET:
        yield Bar(None, None)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[postfix]}"),
    ]
    with Progress(*columns, console=_console, transient=False) as prog:
        task_id = prog.add_task(description, total=total, postfix="")
        yield Bar(prog, task_id)
