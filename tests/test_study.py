"""The README's main command, in its quick form: the built-in study end to end, then resumed."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def test_quick_study_end_to_end_and_resume(tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "rlbound.cli", "--quiet", "study", "--quick", "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=540)
    assert first.returncode == 0, first.stderr
    report = out / "report" / "report.html"
    assert str(report) in first.stdout
    html = report.read_text()
    assert "base" in html and "self-trained" in html and "data:image/png;base64," in html
    results = json.loads((out / "report" / "results.json").read_text())
    runs = {run["label"]: run for run in results["runs"]}
    assert set(runs) == {"base", "self-trained"}
    for run in runs.values():
        assert run["n_problems"] == 30 and run["n_min"] == run["n_max"] == 16
        assert [p["k"] for p in run["pass_at_k"]] == [1, 2, 4, 8, 16]
        # The fitted base model is far from random: it solves some held-out problems.
    assert runs["base"]["pass_at_k"][-1]["mean"] > 0.2
    assert len(results["crossovers"]) == 1

    # Everything is cached: a rerun samples and trains nothing and reproduces the numbers.
    started = time.perf_counter()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert time.perf_counter() - started < 60
    rerun = json.loads((out / "report" / "results.json").read_text())
    assert [r["pass_at_k"] for r in rerun["runs"]] == [r["pass_at_k"] for r in results["runs"]]

    # Other settings on the same directory are refused, naming the field.
    (out / "study.json").write_text((out / "study.json").read_text().replace('"n": 16', '"n": 8'))
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "n: the run has 8" in refused.stderr
