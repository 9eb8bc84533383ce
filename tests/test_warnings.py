"""Honesty warnings: small n for an asked k, unsaturated curves, verifier timeouts; report and CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rlbound.analysis.honesty import run_warnings, saturation_warning, small_n_warnings, timeout_warning
from rlbound.analysis.samples import RunSamples
from rlbound.report.html import write_report
from tests.stored_runs import write_run


pytestmark = pytest.mark.usefixtures("quiet")


def test_small_n_rule_is_2k_above_n_min():
    warns = small_n_warnings("r", [8, 10], [3, 4, 5, 8, 9])
    assert [w.kind for w in warns] == ["small_n", "small_n"]
    assert "pass@5" in warns[0].message and "n = 8" in warns[0].message and "n >= 10" in warns[0].message
    assert "pass@8" in warns[1].message  # k = 4 (2k = n) passes; k = 9 > n is an error elsewhere
    assert small_n_warnings("r", [8, 10], []) == []


def test_saturation_over_the_last_doubling():
    # n = 4: c = 1 -> pass@2 = 1 - C(3,2)/C(4,2) = 1/2, pass@4 = 1; c = 0 -> 0, 0. Mean rise 0.25.
    w = saturation_warning("r", [4, 4], [1, 0])
    assert w is not None and w.kind == "not_saturated" and "pass@4 - pass@2 = 0.250 > 0.02" in w.message
    assert saturation_warning("r", [4, 4], [4, 0]) is None  # 0.5 at both k
    # n = 5 (odd): K = 5, K/2 -> 2. c = 1: pass@2 = 1 - C(4,2)/C(5,2) = 0.4, pass@5 = 1; rise 0.6
    assert "pass@5 - pass@2 = 0.600" in saturation_warning("r", [5], [1]).message
    # rise 0.25 passes a 0.25 threshold (only a larger rise warns)
    assert saturation_warning("r", [4, 4], [1, 0], threshold=0.25) is None
    assert saturation_warning("r", [1, 1], [0, 1]) is None  # K = 1: nothing to double


def test_timeouts_above_one_percent():
    assert timeout_warning("r", {"ok": 99, "timeout": 1}) is None  # exactly 1 %
    w = timeout_warning("r", {"ok": 97, "no_answer": 1, "timeout": 2})
    assert w.kind == "verifier_timeouts" and "2 of 100 samples (2.0%)" in w.message
    assert timeout_warning("r", {}) is None


def test_run_warnings_orders_the_three_checks():
    kinds = [w.kind for w in run_warnings("r", [4, 4], [1, 0], {"ok": 7, "timeout": 1}, [3])]
    assert kinds == ["small_n", "not_saturated", "verifier_timeouts"]


def _run(label, correct_rows, statuses=None):
    correct = [np.array(r, dtype=bool) for r in correct_rows]
    answers = [["1" if c else "0" for c in r] for r in correct_rows]
    statuses = statuses or [["ok"] * len(r) for r in correct_rows]
    return RunSamples(label, [f"p{i}" for i in range(len(correct))], correct, answers, statuses=statuses)


def test_report_puts_warnings_first_and_in_results_json(tmp_path):
    # run "wide": 2 problems, n = 4, c = 1 and 0 -> not saturated; 1 timeout in 8 samples.
    wide = _run("wide <b>", [[1, 0, 0, 0], [0, 0, 0, 0]], [["ok", "ok", "ok", "timeout"], ["ok"] * 4])
    flat = _run("flat", [[1, 1, 1, 1], [0, 0, 0, 0]])
    page = write_report([wide, flat], tmp_path / "out", extra_ks=(3,), n_boot=50)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    got = [(w["kind"], w["run"]) for w in results["warnings"]]
    assert got == [("small_n", "wide <b>"), ("not_saturated", "wide <b>"), ("verifier_timeouts", "wide <b>"),
                   ("small_n", "flat")]
    html = page.read_text()
    box = html.index('<div class="warnbox" id="warnings"><h2>Warnings (4)</h2>')
    assert box < html.index("<h2>Summary</h2>")
    assert "run &#x27;wide &lt;b&gt;&#x27;: 1 of 8 samples (12.5%) timed out" in html

    page = write_report([flat], tmp_path / "calm", n_boot=50)
    assert "Honesty checks passed" in page.read_text() and "warnbox" not in page.read_text().split("</style>")[1]
    assert json.loads((tmp_path / "calm" / "results.json").read_text())["warnings"] == []


def test_cli_report_prints_the_warnings(tmp_path):
    run = write_run(tmp_path / "run", "thin", {
        "a": [("x", 1, True, "ok"), ("x", 1, False, "ok"), ("x", 1, False, "timeout"), ("x", 1, False, "ok")],
        "b": [("x", 1, False, "ok")] * 4,
    })
    out = subprocess.run([sys.executable, "-m", "rlbound.cli", "--quiet", "report", str(run), "--out",
                          str(tmp_path / "rep")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("warning: run 'thin': the pass@k curve has not saturated")
    assert lines[1].startswith("warning: run 'thin': 1 of 8 samples (12.5%) timed out")
    assert lines[-1].startswith("report: ")
