"""The report page in a real headless Chromium: it renders, logs no console error, and screenshots.

Console messages (uncaught exceptions, console.error, blocked resources) reach Chromium's log as
``CONSOLE`` lines with ``--enable-logging=stderr --v=0``; the test fails on any. Two pages built
to fail (a script error, a blank page) check that the checks themselves can fail. Skipped only
when no ``chromium`` binary is installed (CI installs Debian's ``chromium`` in ``.ci/run``).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rlbound.analysis.samples import RunSamples
from rlbound.progress import set_quiet
from rlbound.report.html import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]
WIDTH, HEIGHT = 1400, 3000


def _chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    """Chromium log lines that carry a page's console output or an uncaught exception."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def screenshot(page: Path, tmp: Path) -> tuple[Path, list[str]]:
    png = tmp / f"{page.stem}.png"
    result = _chromium(page, tmp, f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}")
    assert result.returncode == 0, result.stderr[-2000:]
    return png, console_messages(result.stderr)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", data[16:24])


def non_trivial(path: Path) -> bool:
    """A screenshot with real content: over 2 % of pixels not background, over 50 distinct colours."""
    from matplotlib.image import imread

    rgb = (imread(str(path))[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    background = np.all(rgb == rgb[0], axis=1)  # the top-left pixel's colour
    colours = np.unique(rgb[::7], axis=0)
    return bool(background.mean() < 0.98 and len(colours) > 50)


@pytest.fixture
def report(tmp_path) -> Path:
    set_quiet(True)
    rng = np.random.default_rng(0)
    runs = []
    for label, p in (("base", np.linspace(0.05, 0.6, 30)), ("rl", np.where(np.arange(30) % 3, 0.9, 0.0))):
        correct = [rng.random(16) < q for q in p]
        answers = [["42" if ok else str(rng.integers(3)) for ok in row] for row in correct]
        texts = [["Wait, let me check.\nback\n42" if ok else "but however 1" for ok in row] for row in correct]
        statuses = [["ok"] * 16 for _ in correct]
        statuses[0][0] = "timeout"
        runs.append(RunSamples(label, [f"q{i}" for i in range(30)], correct, answers,
                               token_counts=[np.full(16, 20) for _ in correct], statuses=statuses, texts=texts))
    groups = {f"q{i}": ("tree" if i % 2 else "chain") for i in range(30)}
    stages = [{"name": "pretrain", "wall_s": 12.0, "cached": True}, {"name": "sample", "wall_s": 3.5, "cached": False}]
    page = write_report(runs, tmp_path / "report", extra_ks=(12,), n_boot=100, groups=groups, stages=stages)
    set_quiet(False)
    return page


def test_report_renders_without_console_errors(report, tmp_path):
    png, messages = screenshot(report, tmp_path)
    assert messages == [], messages
    assert png_size(png) == (WIDTH, HEIGHT)
    assert png.stat().st_size > 30_000 and non_trivial(png)

    dom = _chromium(report, tmp_path, "--dump-dom")
    assert dom.returncode == 0
    html = dom.stdout
    assert console_messages(dom.stderr) == []
    for heading in ("Summary", "pass@k curves", "Reasoning patterns", "By problem group", "Stages"):
        assert f"<h2>{heading}</h2>" in html
    assert 'class="warnbox"' in html  # extra k = 12 > 16/2: the small-n warning is shown
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) >= 2


def test_the_checks_can_fail(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><body><h1>x</h1><script>undefinedFunction();</script></body></html>')
    _, messages = screenshot(broken, tmp_path)
    assert any("Uncaught ReferenceError" in m for m in messages), messages

    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    png, messages = screenshot(blank, tmp_path)
    assert messages == [] and png_size(png) == (WIDTH, HEIGHT) and not non_trivial(png)
