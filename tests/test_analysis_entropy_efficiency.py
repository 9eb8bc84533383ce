"""Answer and token entropy, and the sampling-efficiency gap ΔSE, on hand-built runs."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from rlbound.analysis.efficiency import sampling_efficiency_gap
from rlbound.analysis.entropy import answer_entropy, answer_entropy_run, entropy_of_answers, token_entropy
from rlbound.analysis.samples import RunSamples
from rlbound.errors import RlboundError


def run(label, rows, ids=None, answers=None, ents=None):
    ids = ids or [f"p{i}" for i in range(len(rows))]
    return RunSamples(label, list(ids), [np.array(r, dtype=bool) for r in rows],
                      answers if answers is not None else [["x"] * len(r) for r in rows],
                      entropy_means=[np.array(e, dtype=float) for e in ents] if ents is not None else [])


# --------------------------------------------------------------------------- answer entropy


def test_answer_entropy_known_distributions():
    assert entropy_of_answers(["a", "b", "c", "d"]) == pytest.approx(math.log(4), abs=1e-12)
    assert entropy_of_answers(["a", "a", "a"]) == 0.0
    assert entropy_of_answers(["a", "a", None, None]) == pytest.approx(math.log(2), abs=1e-12)
    assert entropy_of_answers([None, None, None]) == 0.0  # all unparsable: one bucket
    # a literal answer "NA" is not the None bucket
    assert entropy_of_answers(["NA", None]) == pytest.approx(math.log(2), abs=1e-12)
    p = np.array([3, 1]) / 4
    assert entropy_of_answers(["a", "a", "a", "b"]) == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-12)


def test_answer_entropy_mean_over_problems_and_band():
    ans = [["a", "b", "c", "d"], ["a", "a", "a", "a"], ["a", "a", None, None]]
    res = answer_entropy(ans, problem_ids=["x", "y", "z"], label="r", n_boot=200)
    np.testing.assert_allclose(res.per_problem, [math.log(4), 0.0, math.log(2)], atol=1e-12)
    assert res.mean == pytest.approx((math.log(4) + math.log(2)) / 3)
    assert 0.0 <= res.lo <= res.mean <= res.hi <= math.log(4)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["n_problems"] == 3 and d["unit"] == "nats"
    r = run("rr", [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]], answers=ans)
    assert answer_entropy_run(r, n_boot=0).mean == pytest.approx(res.mean)
    with pytest.raises(RlboundError, match="no samples"):
        answer_entropy([["a"], []])


# --------------------------------------------------------------------------- token entropy


def test_token_entropy_per_problem_then_over_problems():
    # problem 0: mean(1, 3) = 2 ; problem 1: mean(4) = 4 (NaN excluded) ; problem 2: all NaN -> excluded
    r = run("t", [[0, 0], [0, 0, 0], [0]], ents=[[1.0, 3.0], [4.0, np.nan, np.nan], [np.nan]])
    res = token_entropy(r, n_boot=100)
    assert res.available
    assert res.mean == pytest.approx(3.0)  # (2 + 4) / 2, not the sample-weighted mean (1+3+4)/3
    assert res.n_samples == 6 and res.n_samples_missing == 3
    assert res.n_problems_used == 2 and res.n_problems_missing == 1
    assert 2.0 <= res.lo <= res.hi <= 4.0
    assert "3 of 6" in res.note
    d = json.loads(json.dumps(res.to_dict()))
    assert d["mean"] == 3.0 and d["available"] is True


def test_token_entropy_says_when_the_engine_saw_only_the_top_k():
    r = run("t", [[0, 0]], ents=[[1.0, 2.0]])
    assert token_entropy(r, n_boot=50).method == "full vocabulary"
    r.meta = {"engine_details": {"token_entropy": {"method": "top-k", "k": 20}}}
    res = token_entropy(r, n_boot=50)
    assert res.method == "top-20" and res.to_dict()["method"] == "top-20"


def test_token_entropy_unavailable_is_reported_not_raised():
    r = run("none", [[0, 1], [1]])
    res = token_entropy(r)
    assert not res.available and math.isnan(res.mean) and res.note
    assert res.to_dict()["mean"] is None
    r2 = run("nan", [[0, 1]], ents=[[np.nan, np.nan]])
    res2 = token_entropy(r2)
    assert not res2.available and res2.n_samples_missing == 2 and "could not" in res2.note


# --------------------------------------------------------------------------- ΔSE


def _exact_pass(n, c, k):
    from math import comb
    return 1 - Fraction(comb(n - c, k), comb(n, k))


def test_delta_se_value_matches_exact():
    base = run("base", [[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], ids=["a", "b", "c"])
    rl = run("rl", [[1, 1, 0], [1, 1, 1], [0, 0, 1], [1, 1, 1]], ids=["c", "a", "b", "zz"])
    res = sampling_efficiency_gap(base, rl, k_ref=2, n_boot=300, seed=2)
    pb = [_exact_pass(4, 1, 2), _exact_pass(4, 0, 2), _exact_pass(4, 2, 2)]  # a, b, c
    pr = [Fraction(3, 3), Fraction(1, 3), Fraction(2, 3)]  # rl a, b, c pass@1 = c/n
    assert res.n_problems == 3 and res.problem_ids == ["a", "b", "c"]
    assert res.base_pass_at_k_ref == pytest.approx(float(sum(pb) / 3), abs=1e-12)
    assert res.rl_pass_at_1 == pytest.approx(float(sum(pr) / 3), abs=1e-12)
    assert res.delta == pytest.approx(float((sum(pb) - sum(pr)) / 3), abs=1e-12)
    assert res.lo <= res.delta <= res.hi
    d = json.loads(json.dumps(res.to_dict()))
    assert d["k_ref"] == 2 and d["delta_se"]["mean"] == pytest.approx(res.delta)


def test_delta_se_band_is_paired():
    # same per-problem values in both terms: every paired replicate of the difference is exactly 0
    rows = [[1, 0], [0, 0], [1, 1], [0, 1]]
    base = run("b", [[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]])
    rl = run("r", rows)
    # base pass@1 equals rl pass@1 per problem
    res = sampling_efficiency_gap(base, rl, k_ref=1, n_boot=200)
    assert res.delta == pytest.approx(0.0, abs=1e-15)
    assert abs(res.lo) < 1e-12 and abs(res.hi) < 1e-12
    assert res.base_hi - res.base_lo > 0.1  # the unpaired terms do vary


def test_delta_se_errors():
    base = run("base", [[1, 0, 0, 0], [0, 0]], ids=["a", "b"])
    rl = run("rl", [[1], [0]], ids=["a", "b"])
    with pytest.raises(RlboundError, match=r"k_ref=256 .*'b'.*--k-ref \(at most 2\)"):
        sampling_efficiency_gap(base, rl)
    with pytest.raises(RlboundError, match="no problem ids in common"):
        sampling_efficiency_gap(base, run("o", [[1]], ids=["q"]), k_ref=1)


def test_top_k_entropy_is_a_lower_bound_that_is_exact_with_every_outcome():
    from rlbound.engines.base import top_k_entropy

    rng = np.random.default_rng(0)
    logits = rng.normal(size=50) * 2
    logp = logits - np.log(np.exp(logits).sum())
    full = float(-(np.exp(logp) * logp).sum())
    assert top_k_entropy(logp.tolist()) == pytest.approx(full)
    bounds = [top_k_entropy(sorted(logp.tolist(), reverse=True)[:k]) for k in (1, 5, 20, 49)]
    assert all(b <= full + 1e-12 for b in bounds)
    assert bounds == sorted(bounds)  # more outcomes seen, tighter bound
    assert top_k_entropy([None, float("-inf"), 0.0]) == 0.0
