"""pass@k estimator, curve + bootstrap band, maj@k, crossover, accuracy histogram."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from rlbound.analysis.bootstrap import bootstrap_means, percentile_interval
from rlbound.analysis.passk import (
    ACCURACY_BINS,
    accuracy_histogram,
    crossover,
    default_ks,
    maj_at_k,
    maj_at_k_run,
    pass_at_k,
    pass_at_k_curve,
)
from rlbound.analysis.samples import RunSamples
from rlbound.errors import RlboundError


def exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def _random_cases(rng, count, n_max=4096):
    for _ in range(count):
        n = int(rng.integers(1, n_max + 1))
        c = int(rng.integers(0, n + 1))
        k = int(rng.integers(1, n + 1))
        r = rng.random()
        if r < 0.25:  # few correct: pass@k small, relative error matters
            c = int(rng.integers(0, min(n, 4) + 1))
        elif r < 0.5:  # small k
            k = int(rng.integers(1, min(n, 8) + 1))
        elif r < 0.6:  # near-certain solve
            c = n - int(rng.integers(0, min(n, 3) + 1))
        yield n, c, k


# --------------------------------------------------------------------------- estimator


def test_pass_at_k_matches_rational_arithmetic():
    rng = np.random.default_rng(12345)
    for n, c, k in _random_cases(rng, 400):
        want = exact(n, c, k)
        got = pass_at_k(n, c, k)
        assert isinstance(got, float)
        err = abs(Fraction(got) - want)
        assert err <= Fraction(1, 10**12), (n, c, k, got, float(want))
        if want > 0:
            assert err / want <= Fraction(1, 10**12), (n, c, k, got, float(want))


def test_pass_at_k_vectorised_matches_rational_arithmetic():
    rng = np.random.default_rng(7)
    n = rng.integers(64, 4097, size=60)
    c = rng.integers(0, n + 1)
    c[:5] = [0, 1, 2, 3, 4]
    ks = np.array([1, 2, 5, 17, 64])
    got = pass_at_k(n, c, ks)
    assert got.shape == (60, 5)
    for i in range(60):
        for j, k in enumerate(ks):
            assert abs(got[i, j] - float(exact(int(n[i]), int(c[i]), int(k)))) <= 1e-12


def test_edge_cases():
    assert pass_at_k(10, 0, 3) == 0.0
    assert pass_at_k(10, 10, 3) == 1.0
    assert pass_at_k(10, 1, 10) == 1.0  # k = n: any correct sample is in the only subset
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(1, 1, 1) == 1.0
    assert pass_at_k(4096, 1, 1) == pytest.approx(1 / 4096, rel=1e-15)
    assert pass_at_k(10, 1, 3) == pytest.approx(0.3, rel=1e-15)  # c=1: k/n exactly
    assert pass_at_k(10, 7, 4) == 1.0  # n - c < k: every 4-subset holds a correct sample


def test_k_larger_than_n_is_refused_naming_the_problem():
    with pytest.raises(RlboundError, match=r"k=9 .*n=8 .*'hard-7'"):
        pass_at_k([16, 8, 16], [1, 2, 3], 9, problem_ids=["easy-1", "hard-7", "x"])
    with pytest.raises(RlboundError, match=r"problem #1"):
        pass_at_k([16, 8], [1, 2], [1, 16])
    with pytest.raises(RlboundError, match="k=9"):
        pass_at_k_curve((np.array([16, 8]), np.array([1, 1])), extra_ks=(9,))


@pytest.mark.parametrize(
    "n, c, k, pattern",
    [(5, 6, 1, "exceeds"), (-1, 0, 1, "negative"), (5, -1, 1, "negative"), (5, 1, 0, "k must be"),
     (5.5, 1, 1, "whole")],
)
def test_invalid_inputs_raise(n, c, k, pattern):
    with pytest.raises(RlboundError, match=pattern):
        pass_at_k(n, c, k)


def test_vectorised_shapes():
    n = np.array([8, 16, 32])
    c = np.array([1, 4, 0])
    assert pass_at_k(n, c, 2).shape == (3,)
    assert pass_at_k(n, c, [1, 2, 4, 8]).shape == (3, 4)
    assert pass_at_k(16, 4, [1, 2, 4]).shape == (3,)
    assert pass_at_k(16, c, 3).shape == (3,)  # scalar n broadcasts against per-problem c
    m = pass_at_k(n, c, [1, 2, 4, 8])
    for i in range(3):
        for j, k in enumerate([1, 2, 4, 8]):
            assert m[i, j] == pass_at_k(int(n[i]), int(c[i]), k)
    assert np.all(np.diff(m, axis=1) >= 0)  # monotone in k


def test_default_ks():
    assert default_ks(64).tolist() == [1, 2, 4, 8, 16, 32, 64]
    assert default_ks(100, (3, 100, 8)).tolist() == [1, 2, 3, 4, 8, 16, 32, 64, 100]


# --------------------------------------------------------------------------- curve + bootstrap


def _nc(rng, problems, n=64):
    p = rng.beta(0.4, 0.7, size=problems)
    return np.full(problems, n), rng.binomial(n, p)


def test_curve_mean_and_band():
    rng = np.random.default_rng(0)
    n, c = _nc(rng, 200)
    cur = pass_at_k_curve((n, c), extra_ks=(3,), n_boot=400)
    assert cur.ks.tolist() == [1, 2, 3, 4, 8, 16, 32, 64]
    assert cur.per_problem.shape == (200, 8) and cur.n_problems == 200
    np.testing.assert_allclose(cur.mean, pass_at_k(n, c, cur.ks).mean(axis=0))
    assert cur.mean[0] == pytest.approx(np.mean(c / n))
    assert np.all(cur.lo <= cur.mean) and np.all(cur.mean <= cur.hi)
    assert np.all(cur.hi - cur.lo > 0)
    again = pass_at_k_curve((n, c), extra_ks=(3,), n_boot=400)
    np.testing.assert_array_equal(cur.lo, again.lo)  # deterministic in the seed


def test_band_narrows_with_more_problems():
    rng = np.random.default_rng(1)
    small = pass_at_k_curve(_nc(rng, 30), n_boot=500)
    large = pass_at_k_curve(_nc(rng, 3000), n_boot=500)
    w_small, w_large = small.hi - small.lo, large.hi - large.lo
    assert np.all(w_large < w_small / 4)  # ~ 1/sqrt(100) = 1/10 in expectation


def test_bootstrap_band_matches_known_standard_error():
    rng = np.random.default_rng(2)
    x = rng.random(400)
    (reps,) = bootstrap_means([x], 2000, seed=3)
    lo, hi = percentile_interval(reps, 0.95)
    se = x.std() / math.sqrt(len(x))
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.12)


def test_curve_without_bootstrap_and_from_runsamples():
    run = RunSamples("r", ["a", "b"], [np.array([1, 0, 0, 0]), np.array([1, 1, 1, 1])], [[None] * 4] * 2)
    cur = pass_at_k_curve(run, n_boot=0)
    assert cur.label == "r" and cur.problem_ids == ["a", "b"]
    assert cur.ks.tolist() == [1, 2, 4]
    np.testing.assert_allclose(cur.mean, [(0.25 + 1) / 2, (0.5 + 1) / 2, 1.0])
    assert np.all(np.isnan(cur.lo))


# --------------------------------------------------------------------------- maj@k


def test_maj_at_k_hand_made():
    answers = [
        ["4", "5", "5", None, "4"],   # k=3: 5 twice -> "5" (wrong); k=5: 4 and 5 tie -> "4" first
        ["1", "2", "1", "2", "2"],    # k=3: "1" (right); k=5: "2" (wrong)
        [None, None, None, "7", "7"],  # k=3: nobody voted -> wrong; k=5: "7" (right)
        ["9", "8", "7", "6", "5"],    # all tie -> first "9" (right)
    ]
    correct = [
        [1, 0, 0, 0, 1],
        [1, 0, 1, 0, 0],
        [0, 0, 0, 1, 1],
        [1, 0, 0, 0, 0],
    ]
    m3 = maj_at_k(answers, correct, 3, n_boot=200)
    assert m3.correct.tolist() == [False, True, False, True]
    assert m3.mean == 0.5 and m3.lo <= 0.5 <= m3.hi
    m5 = maj_at_k(answers, correct, 5, n_boot=0)
    assert m5.correct.tolist() == [True, False, True, True]
    assert m5.mean == 0.75
    m1 = maj_at_k(answers, correct, 1, n_boot=0)
    assert m1.correct.tolist() == [True, True, False, True]
    with pytest.raises(RlboundError, match=r"k=6 .*problem 'q0'"):
        maj_at_k(answers, correct, 6, problem_ids=["q0", "q1", "q2", "q3"])


def test_maj_at_k_run():
    run = RunSamples("r", ["a"], [np.array([False, True, True])], [["x", "y", "y"]])
    assert maj_at_k_run(run, 3, n_boot=0).correct.tolist() == [True]
    assert maj_at_k_run(run, 1, n_boot=0).correct.tolist() == [False]


# --------------------------------------------------------------------------- crossover


def _pairs(n, c_list):
    return np.full(len(c_list), n), np.array(c_list)


def test_crossover_hand_made_at_k8():
    # A: half the problems always solved, half never -> pass@k = 0.5 for every k.
    # B: every problem has exactly 1 correct of 16 -> pass@k = k/16; B >= A exactly from k = 8.
    a = _pairs(16, [16, 0] * 50)
    b = _pairs(16, [1, 1] * 50)
    x = crossover(a, b, n_boot=300)
    assert x.k == 8 and x.k_max == 16 and x.n_problems == 100
    assert x.mean_a[0] == 0.5 and x.mean_b[0] == pytest.approx(1 / 16)
    assert x.lo is not None and x.hi is not None and x.lo <= 8 <= x.hi
    assert x.frac_none == 0.0  # B reaches 1.0 at k=16 in every replicate
    assert "overtakes" in x.statement() and "k=8" in x.statement()
    # A better at k=1 but B better from k=8: the other direction never catches up (A stays at 0.5)
    back = crossover(b, a, n_boot=100)
    assert back.k is None and back.frac_none == 1.0
    assert "no crossover up to n=16" in back.statement()


def test_crossover_from_the_start_and_no_crossover():
    a = _pairs(8, [1, 2, 0] * 20)
    b = _pairs(8, [8, 3, 1] * 20)
    assert crossover(a, b, n_boot=50).k == 1
    none = crossover(b, a, n_boot=50)
    assert none.k is None and none.lo is None and none.hi is None
    assert "no crossover up to n=8" in none.statement()


def _brute_crossover(na, ca, nb, cb):
    k_max = int(min(na.min(), nb.min()))
    diffs = []
    for k in range(1, k_max + 1):
        fa = sum(exact(int(n), int(c), k) for n, c in zip(na, ca)) / len(na)
        fb = sum(exact(int(n), int(c), k) for n, c in zip(nb, cb)) / len(nb)
        diffs.append(fb - fa)
    below = [k for k, d in enumerate(diffs, start=1) if d < 0]
    if not below:
        return 1
    return None if below[-1] == k_max else below[-1] + 1


def test_crossover_matches_rational_brute_force():
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(25):
        n = int(rng.integers(4, 24))
        na, nb = np.full(6, n), np.full(6, n + int(rng.integers(0, 3)))
        ca = rng.binomial(na, rng.random(6) * (rng.random(6) < 0.5))
        cb = rng.binomial(nb, rng.random(6) * 0.3)
        want = _brute_crossover(na, ca, nb, cb)
        hits += want not in (None, 1)
        assert crossover((na, ca), (nb, cb), n_boot=0).k == want
    assert hits >= 3  # the random cases do include real crossovers


def test_crossover_matches_problems_by_id():
    ids = [f"p{i}" for i in range(40)]
    rng = np.random.default_rng(9)
    corr_a = [rng.random(32) < p for p in rng.random(40)]
    corr_b = [rng.random(32) < p for p in rng.random(40) ** 3]
    ra = RunSamples("base", ids, corr_a, [[None] * 32] * 40)
    order = rng.permutation(40)
    rb_shuffled = RunSamples(
        "rl", [ids[i] for i in order] + ["extra"], [corr_b[i] for i in order] + [np.ones(32, bool)],
        [[None] * 32] * 41,
    )
    rb = RunSamples("rl", ids, corr_b, [[None] * 32] * 40)
    x1 = crossover(ra, rb, n_boot=200)
    x2 = crossover(ra, rb_shuffled, n_boot=200)
    assert x2.n_problems == 40
    assert (x1.k, x1.lo, x1.hi, x1.frac_none) == (x2.k, x2.lo, x2.hi, x2.frac_none)
    np.testing.assert_allclose(x1.mean_b, x2.mean_b)
    other = RunSamples("other", ["zz"], [np.ones(32, bool)], [[None] * 32])
    with pytest.raises(RlboundError, match="no problem ids in common"):
        crossover(ra, other)


# --------------------------------------------------------------------------- histogram


def test_accuracy_histogram_bins():
    n = [10] * 12 + [7]
    c = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 3]  # 3/7 = 0.43 -> (0.4,0.5]
    h = accuracy_histogram(n, c)
    assert len(h) == len(ACCURACY_BINS) == 12
    assert ACCURACY_BINS[0] == "0" and ACCURACY_BINS[-1] == "1" and ACCURACY_BINS[-2] == "(0.9,1)"
    assert h.tolist() == [1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 0, 2]
    assert accuracy_histogram([100], [95]).tolist()[10] == 1  # (0.9,1)
