"""Support at the level of solutions, on hand-built runs whose distinct correct solutions are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rlbound.analysis.samples import RunSamples
from rlbound.analysis.solutions import (
    answer_key,
    countdown_key,
    distinct_correct,
    solution_key_kind,
    solution_support,
)
from rlbound.errors import RlboundError

COUNTDOWN_META = {"config": {"task": {"name": "countdown"}, "verifier": {"name": "countdown", "settings": {}}}}


def run(label, rows, ids=None, meta=None):
    """rows: per problem a list of (correct, answer) in sample order."""
    ids = ids or [f"p{i}" for i in range(len(rows))]
    return RunSamples(label, list(ids), [np.array([c for c, _ in r], dtype=bool) for r in rows],
                      [[a for _, a in r] for r in rows], meta=meta or {})


# p0: base {A, B}, rl {A, C, D} -> shared 1, new 2, lost 1
# p1: base {X},    rl {X}       -> shared 1
# p2: base {},     rl {E}       -> shared 0, new 1 (RL expands)
# p3: base {F, G}, rl {}        -> lost 2 (RL has none: p3 is out of the per-problem mean)
BASE = run("base", [
    [(1, "A"), (0, "C"), (1, "B"), (1, "A")],
    [(1, "X"), (1, "X"), (0, "Y"), (0, None)],
    [(0, "E"), (0, "Q"), (0, None), (0, "E")],
    [(1, "F"), (1, "G"), (0, "Z"), (1, "F")],
])
RL = run("rl", [
    [(1, "C"), (1, "A"), (1, "D"), (1, "C")],
    [(1, "X"), (1, "X"), (1, "X"), (1, "X")],
    [(1, "E"), (0, "Q"), (0, "Q"), (0, "Q")],
    [(0, "F"), (0, "G"), (0, "Z"), (0, None)],
])


def test_counts_rates_and_diversity_exactly():
    sol = solution_support(BASE, RL, 4, n_boot=0)
    assert sol.problem_ids == ["p0", "p1", "p2", "p3"] and sol.key_kind == "answer"
    assert sol.base_distinct.tolist() == [2, 1, 0, 2]
    assert sol.rl_distinct.tolist() == [3, 1, 1, 0]
    assert sol.shared.tolist() == [1, 1, 0, 0]
    assert sol.new.tolist() == [2, 0, 1, 0]
    assert sol.lost.tolist() == [1, 0, 0, 2]
    e = sol.estimates
    assert e["recovery_pooled"].value == pytest.approx(2 / 5, abs=1e-15)
    assert e["recovery_mean"].value == pytest.approx((1 / 3 + 1 + 0) / 3, abs=1e-15)
    assert e["base_diversity"].value == pytest.approx(5 / 4, abs=1e-15)
    assert e["rl_diversity"].value == pytest.approx(5 / 4, abs=1e-15)
    assert e["base_diversity_solved"].value == pytest.approx(5 / 3, abs=1e-15)
    assert e["rl_diversity_solved"].value == pytest.approx(5 / 3, abs=1e-15)
    assert all(math.isnan(x.lo) and math.isnan(x.hi) for x in e.values())  # no bootstrap asked
    d = json.loads(json.dumps(sol.to_dict(), allow_nan=False))
    assert d["counts"] == {"base_distinct": 5, "rl_distinct": 5, "shared": 2, "new": 3, "lost": 3}
    assert d["problems_with_rl_solutions"] == 3 and d["n_problems"] == 4 and d["k"] == 4
    assert d["per_problem"][0] == {"problem_id": "p0", "base": 2, "rl": 3, "shared": 1, "new": 2, "lost": 1}
    assert d["recovery"]["pooled"]["value"] == pytest.approx(0.4) and d["recovery"]["pooled"]["lo"] is None
    assert d["diversity"]["base"]["mean_solved"]["value"] == pytest.approx(5 / 3)


def test_roles_are_not_symmetric():
    sol = solution_support(RL, BASE, 4, n_boot=0)  # base and RL swapped: recovery is of BASE's solutions
    assert sol.shared.tolist() == [1, 1, 0, 0] and sol.new.tolist() == [1, 0, 0, 2]
    assert sol.estimates["recovery_pooled"].value == pytest.approx(2 / 5)
    assert sol.estimates["recovery_mean"].value == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_first_k_samples_by_index_only():
    sol = solution_support(BASE, RL, 2, n_boot=0)
    # base p0 keeps only A (B is at index 2); RL p0 keeps {C, A}; base p3 {F, G}; RL p2 {E}
    assert sol.base_distinct.tolist() == [1, 1, 0, 2]
    assert sol.rl_distinct.tolist() == [2, 1, 1, 0]
    assert sol.shared.tolist() == [1, 1, 0, 0]
    assert sol.estimates["recovery_pooled"].value == pytest.approx(2 / 4)
    # a solution the base reaches only after k is not "shared" at k
    late = run("late", [[(0, "A"), (0, "A"), (1, "A")]])
    early = run("early", [[(1, "A"), (0, "B"), (0, "B")]])
    assert solution_support(late, early, 2, n_boot=0).shared.tolist() == [0]
    assert solution_support(late, early, 3, n_boot=0).shared.tolist() == [1]


def test_incorrect_samples_are_ignored():
    # the base states C wrong in p0 (index 1): C must not count as recovered
    sets, missing = distinct_correct(BASE, 4, answer_key)
    assert sets[0] == {"A", "B"} and "C" not in sets[0] and missing == 0
    wrong_only = run("wrong", [[(0, "A"), (0, "C"), (0, "D"), (0, "A")]] * 4)
    sol = solution_support(wrong_only, RL, 4, n_boot=0)
    assert sol.shared.sum() == 0 and sol.base_distinct.sum() == 0
    assert sol.estimates["recovery_pooled"].value == 0.0


def test_correct_samples_without_answer_are_counted_apart():
    base = run("b", [[(1, None), (1, "7"), (1, None)]])
    rl = run("r", [[(1, None), (0, "7"), (1, "8")]])
    sol = solution_support(base, rl, 3, n_boot=0)
    assert sol.base_distinct.tolist() == [1] and sol.rl_distinct.tolist() == [1] and sol.shared.tolist() == [0]
    assert sol.to_dict()["correct_without_answer"] == {"base": 2, "rl": 1}


def test_answer_key_normalises_whitespace_only():
    assert answer_key("  x  =  4 ") == "x = 4" and answer_key("4\n2") == "4 2"
    base = run("b", [[(1, " 42 "), (1, "4  2")]])
    rl = run("r", [[(1, "42"), (1, "4 2"), (1, "42.0")]])
    sol = solution_support(base, rl, 2, n_boot=0)
    assert sol.base_distinct.tolist() == [2] and sol.rl_distinct.tolist() == [2] and sol.shared.tolist() == [2]
    sol3 = solution_support(run("b3", [[(1, " 42 "), (1, "4  2"), (0, "1")]]), rl, 3, n_boot=0)
    assert sol3.rl_distinct.tolist() == [3] and sol3.new.tolist() == [1]  # "42.0" is another answer


def test_countdown_normal_form_makes_equivalent_expressions_one_solution():
    assert countdown_key("3*4+5") == countdown_key("5+4*3") == countdown_key("(4*3)+5 = 17")
    assert countdown_key("3*4+5") != countdown_key("3*5+2")
    base = run("b", [[(1, "3*4+5"), (1, "3*5+2"), (0, "5+4*3")]], meta=COUNTDOWN_META)
    rl = run("r", [[(1, "5+4*3"), (1, "5 + (3*4)=17"), (1, "2+5*3"), (1, "10+7")]], meta=COUNTDOWN_META)
    sol = solution_support(base, rl, 3, "countdown", n_boot=0)
    assert sol.key_kind == "countdown"
    assert sol.base_distinct.tolist() == [2] and sol.rl_distinct.tolist() == [2] and sol.shared.tolist() == [2]
    # the plain answer key keeps the spellings apart
    plain = solution_support(base, rl, 3, "answer", n_boot=0)
    assert plain.rl_distinct.tolist() == [3] and plain.shared.tolist() == [0]
    # an unparsable answer falls back to its normalised text instead of failing
    assert countdown_key("not an  expression") == "not an expression"


def test_key_kind_from_run_meta():
    math_meta = {"config": {"task": {"name": "math500"}, "verifier": {"name": "math"}}}
    assert solution_key_kind(COUNTDOWN_META, COUNTDOWN_META) == "countdown"
    assert solution_key_kind(COUNTDOWN_META, math_meta) == "answer"
    assert solution_key_kind(math_meta) == "answer"
    assert solution_key_kind({"config": {"task": {"name": "countdown"}}}) == "countdown"  # no verifier recorded
    assert solution_key_kind({"config": {"task": {"name": "countdown"}, "verifier": {"name": "exact"}}}) == "answer"
    assert solution_key_kind({}, None) == "answer" and solution_key_kind() == "answer"


def test_custom_key_function():
    rl = run("r", [[(1, "Paris"), (1, "paris"), (1, "PARIS ")]])
    base = run("b", [[(1, "paris"), (0, "x"), (0, "y")]])
    sol = solution_support(base, rl, 3, lambda a: a.strip().lower(), n_boot=0)
    assert sol.key_kind == "custom" and sol.rl_distinct.tolist() == [1] and sol.shared.tolist() == [1]
    assert sol.to_dict()["key_definition"].startswith("the caller's")


def test_undefined_rates_when_rl_has_no_correct_solution():
    rl_none = run("r", [[(0, "A"), (0, "B")], [(0, None), (0, "C")]])
    base = run("b", [[(1, "A"), (1, "B")], [(1, "C"), (0, "D")]])
    sol = solution_support(base, rl_none, 2, n_boot=40, seed=3)
    for name in ("recovery_pooled", "recovery_mean", "rl_diversity_solved"):
        e = sol.estimates[name]
        assert math.isnan(e.value) and math.isnan(e.lo) and e.undefined_frac == 1.0
    assert sol.estimates["rl_diversity"].value == 0.0
    assert sol.estimates["base_diversity"].value == pytest.approx(3 / 2)
    d = json.loads(json.dumps(sol.to_dict(), allow_nan=False))
    assert d["recovery"]["pooled"] == {"value": None, "lo": None, "hi": None, "undefined_frac": 1.0}
    assert d["diversity"]["rl"]["mean_solved"]["value"] is None
    assert d["counts"]["lost"] == 3


def test_bootstrap_bands_are_paired_and_cover_the_value():
    sol = solution_support(BASE, RL, 4, n_boot=300, seed=1)
    for name, e in sol.estimates.items():
        assert e.lo <= e.value <= e.hi, name
    # two problems, RL solves only the first: a replicate drawing the second twice (p = 1/4) is undefined
    half = solution_support(run("b", [[(1, "A")], [(1, "B")]]), run("r", [[(1, "A")], [(0, "B")]]), 1,
                            n_boot=2000, seed=2).estimates["recovery_pooled"]
    assert half.value == 1.0 and abs(half.undefined_frac - 0.25) < 0.04
    assert sol.estimates["recovery_pooled"].lo < sol.estimates["recovery_pooled"].hi
    again = solution_support(BASE, RL, 4, n_boot=300, seed=1)
    assert again.estimates["recovery_mean"].lo == sol.estimates["recovery_mean"].lo
    # identical problems: every replicate is the same, so the band collapses onto the value
    same = run("s", [[(1, "A"), (1, "B")]] * 5)
    other = run("o", [[(1, "B"), (1, "C")]] * 5)
    flat = solution_support(same, other, 2, n_boot=100).estimates["recovery_pooled"]
    assert flat.value == flat.lo == flat.hi == 0.5 and flat.undefined_frac == 0.0


def test_problems_matched_by_id_and_errors():
    rl2 = run("rl2", [[(1, "A"), (1, "Z")], [(1, "q")]], ids=["p0", "other"])
    sol = solution_support(BASE, rl2, 2, n_boot=0)
    assert sol.problem_ids == ["p0"] and sol.shared.tolist() == [1] and sol.rl_distinct.tolist() == [2]
    with pytest.raises(RlboundError, match="k=5 is larger than n=4"):
        solution_support(BASE, RL, 5, n_boot=0)
    with pytest.raises(RlboundError, match="no problem ids in common"):
        solution_support(BASE, run("x", [[(1, "A")]], ids=["zz"]), 1, n_boot=0)
    no_answers = RunSamples("na", ["p0"], [np.array([True, True])], [])
    with pytest.raises(RlboundError, match="no extracted answers"):
        solution_support(BASE, no_answers, 2, n_boot=0)
    with pytest.raises(RlboundError, match="unknown key kind"):
        solution_support(BASE, RL, 2, "solution", n_boot=0)


@pytest.mark.usefixtures("quiet")
def test_report_results_json_carries_solution_support(tmp_path):
    from rlbound.report.html import write_report

    base = run("base", [[(1, "3*4+5"), (1, "3*5+2"), (0, "1"), (1, "17")]] * 3
               + [[(0, "1"), (0, "2"), (0, "3"), (0, "4")]], meta=COUNTDOWN_META)
    rl = run("rl", [[(1, "5+4*3"), (1, "5+4*3"), (1, "20-3")]] * 3
             + [[(1, "9+8"), (0, "2"), (0, "3")]], meta=COUNTDOWN_META)
    page = write_report([base, rl], tmp_path, n_boot=50)
    res = json.loads((tmp_path / "results.json").read_text())
    (sc,) = res["support_comparisons"]
    block = sc["solution_support"]
    assert sc["k"] == 3 and block["k"] == 3 and block["key"] == "countdown" and sc["solution_support_note"] == ""
    expected = solution_support(base, rl, 3, "countdown", n_boot=50)
    assert block == json.loads(json.dumps(expected.to_dict(), allow_nan=False))
    # per problem 0-2: base {3*4+5, 3*5+2}, RL {5+4*3 (= 3*4+5), 20-3}; problem 3: RL {9+8} only
    assert block["counts"] == {"base_distinct": 6, "rl_distinct": 7, "shared": 3, "new": 4, "lost": 3}
    assert block["recovery"]["pooled"]["value"] == pytest.approx(3 / 7)
    text = page.read_text(encoding="utf-8")
    assert 'id="solution-support"' in text and "<b>Recovered</b>" in text
    assert f"{3 / 7:.3f}" in text
