"""Reasoning-pattern counts: matching rules, rates per 1k tokens with bands, store, report, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rlbound.analysis.patterns import (
    DEFAULT_MARKERS,
    count_markers,
    load_markers,
    markers_from_lists,
    reasoning_patterns,
    reasoning_patterns_run,
)
from rlbound.analysis.samples import RunSamples
from rlbound.errors import RlboundError
from rlbound.report.html import write_report
from rlbound.store import load_run
from tests.stored_runs import write_run


pytestmark = pytest.mark.usefixtures("quiet")


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def test_word_boundaries_and_case():
    text = "But the button... rebut it. BUT, but-not; however Howevers. Wait: waiting, await."
    assert _nonzero(count_markers(text)) == {"but": 3, "however": 1, "wait": 1}


def test_phrases_span_whitespace_and_curly_apostrophes():
    text = "Let me\n  check.  That\u2019s wrong. that's WRONG. let me checking"
    assert _nonzero(count_markers(text)) == {"let me check": 1, "that's wrong": 2}


def test_longest_phrase_wins_without_double_counting():
    markers = markers_from_lists({"reflection": ["check", "let me check"], "transition": ["me"]})
    counts = count_markers("let me check, then check, me", markers)
    assert counts == {"check": 1, "let me check": 1, "me": 1}


def test_lab_backtrack_is_a_line_holding_only_back():
    text = "3+4=7\nback\n  BACK  \nwe go back here\nback up\nback"
    counts = _nonzero(count_markers(text))
    assert counts == {"lab backtrack": 3, "go back": 1}
    assert next(m for m in DEFAULT_MARKERS if m.name == "lab backtrack").category == "backtracking"


def test_rates_per_1k_tokens_hand_computed():
    texts = [["Wait, but x", "back\nok"], ["However it works"]]
    tokens = [[10, 30], [60]]
    r = reasoning_patterns(texts, tokens, label="m", n_boot=200)
    assert r.categories == ["reflection", "transition", "backtracking"]
    # 100 tokens: reflection 1 (wait), transition 2 (but, however), backtracking 1 (lab line)
    assert r.rate("reflection")[0] == pytest.approx(10.0)
    assert r.rate("transition")[0] == pytest.approx(20.0)
    assert r.rate("backtracking")[0] == pytest.approx(10.0)
    assert r.category_count.tolist() == [1, 2, 1]
    assert (r.n_problems, r.n_samples, r.n_tokens) == (2, 3, 100)
    # Bootstrap of a ratio of totals: problem 1 alone has transition 1000*1/40 = 25, problem 2 alone
    # 1000*1/60 = 16.67; every resample lies between (and the 95% band hits both ends with 200 draws).
    mean, lo, hi = r.rate("transition")
    assert lo == pytest.approx(1000 / 60) and hi == pytest.approx(25.0)
    d = r.to_dict()
    lab = next(m for m in d["markers"] if m["name"] == "lab backtrack")
    assert lab["count"] == 1 and lab["per_1k_tokens"] == pytest.approx(10.0) and lab["whole_line"] is True


def test_identical_problems_give_a_band_of_zero_width():
    r = reasoning_patterns([["wait wait"], ["wait wait"]], [[50], [50]], n_boot=100)
    assert r.rate("reflection") == pytest.approx((40.0, 40.0, 40.0))


def test_unavailable_without_texts_or_tokens_and_shape_errors():
    run = RunSamples("t", ["a"], [np.array([True])], [["1"]])
    r = reasoning_patterns_run(run, n_boot=10)
    assert not r.available and "no completion texts" in r.note and np.isnan(r.rate("reflection")[0])
    r = reasoning_patterns([["wait"]], [], n_boot=10)
    assert not r.available and "token counts" in r.note
    with pytest.raises(RlboundError, match="2 texts but 1 token counts"):
        reasoning_patterns([["a", "b"]], [[3]], n_boot=10)


def test_marker_lists_are_checked(tmp_path):
    with pytest.raises(RlboundError, match="more than once"):
        markers_from_lists({"reflection": ["Wait"], "transition": ["wait"]})
    with pytest.raises(RlboundError, match="empty marker"):
        markers_from_lists({"reflection": ["  "]})
    good = tmp_path / "m.json"
    good.write_text(json.dumps({"phrases": {"doubt": ["maybe not"]}, "lines": {"backtracking": ["undo"]}}))
    markers = load_markers(good)
    assert [(m.name, m.category, m.whole_line) for m in markers] == [
        ("maybe not", "doubt", False), ('line "undo"', "backtracking", True)]
    r = reasoning_patterns([["Maybe not.\nundo\n"]], [[20]], markers=markers, n_boot=0)
    assert r.categories == ["backtracking", "doubt"]
    assert r.category_rate.tolist() == [50.0, 50.0]
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(RlboundError, match="not valid JSON"):
        load_markers(bad)
    bad.write_text(json.dumps({"reflection": ["wait"]}))
    with pytest.raises(RlboundError, match="must hold"):
        load_markers(bad)


def _stored(tmp_path):
    return write_run(tmp_path / "run", "stored", {
        "p1": [("Wait, let me check.\nback\n7", 20, True, "ok"), ("no markers here", 20, False, "ok")],
        "p2": [("Alternatively, however", 10, True, "ok"), ("but", 10, False, "ok")],
    })


def test_store_carries_texts_and_report_shows_rates(tmp_path):
    run = load_run(_stored(tmp_path)).samples
    assert run.texts == [["Wait, let me check.\nback\n7", "no markers here"], ["Alternatively, however", "but"]]
    write_report([run], tmp_path / "out", n_boot=100)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    (entry,) = results["reasoning_patterns"]
    rates = {c["name"]: c["per_1k_tokens"] for c in entry["categories"]}
    # 60 tokens: reflection 2 (wait, let me check), transition 3, backtracking 1
    assert rates == pytest.approx({"reflection": 2000 / 60, "transition": 3000 / 60, "backtracking": 1000 / 60})
    assert entry["n_completion_tokens"] == 60
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<h2>Reasoning patterns</h2>" in page and "lab backtrack" in page and "33.333" in page


def test_cli_patterns_table_and_json(tmp_path):
    path = _stored(tmp_path)
    cmd = [sys.executable, "-m", "rlbound.cli", "patterns", str(path)]
    out = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (entry,) = json.loads(out.stdout)
    assert entry["label"] == "stored" and entry["categories"][1]["count"] == 3
    table = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "stored" in table.stdout and "50.00" in table.stdout
