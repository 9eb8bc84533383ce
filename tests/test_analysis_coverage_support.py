"""Coverage at budget k and Invisible-Leash empirical support, on hand-built runs with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rlbound.analysis.coverage import coverage, coverage_curve, match_problems, solved_at_k
from rlbound.analysis.samples import RunSamples
from rlbound.analysis.support import empirical_support, support_metrics
from rlbound.errors import RlboundError


def run(label, rows, ids=None):
    """rows: one list of 0/1 per problem."""
    ids = ids or [f"p{i}" for i in range(len(rows))]
    return RunSamples(label, list(ids), [np.array(r, dtype=bool) for r in rows],
                      [["x"] * len(r) for r in rows])


# base / rl over p0..p4; first-k semantics matter: p1's base correct sample is at index 3
BASE = run("base", [[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
RL = run("rl", [[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])


# --------------------------------------------------------------------------- coverage


def test_solved_uses_first_k_by_sample_index():
    assert solved_at_k(BASE, 1).tolist() == [True, False, False, False, False]
    assert solved_at_k(BASE, 2).tolist() == [True, False, True, False, False]
    assert solved_at_k(BASE, 4).tolist() == [True, True, True, False, False]


def test_coverage_categories_at_k():
    cov = coverage(BASE, RL, 2)
    assert cov.both == ["p0", "p2"] and cov.a_only == [] and cov.b_only == [] and cov.neither == ["p1", "p3", "p4"]
    cov = coverage(BASE, RL, 4)
    assert cov.both == ["p0", "p2"]
    assert cov.a_only == ["p1"] and cov.b_only == ["p3"] and cov.neither == ["p4"]
    assert cov.solved_a == 3 and cov.solved_b == 3
    d = json.loads(json.dumps(cov.to_dict()))
    assert d["counts"] == {"a_only": 1, "b_only": 1, "both": 2, "neither": 1}


def test_coverage_matches_by_id_intersection():
    b2 = run("rl2", [[0, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], ids=["p3", "zz", "p0"])
    cov = coverage(BASE, b2, 4)
    assert cov.n_problems == 2
    assert cov.a_only == ["p0"] and cov.b_only == ["p3"] and cov.both == [] and cov.neither == []
    assert cov.n_only_in_a == 3 and cov.n_only_in_b == 1
    ids, ia, ib = match_problems(BASE, b2, "x")
    assert ids == ["p0", "p3"] and ia.tolist() == [0, 3] and ib.tolist() == [2, 0]


def test_coverage_errors():
    with pytest.raises(RlboundError, match="no problem ids in common"):
        coverage(BASE, run("o", [[1]], ids=["q"]), 1)
    short = run("short", [[1, 1, 1, 1], [1, 1]], ids=["p0", "p1"])
    with pytest.raises(RlboundError, match=r"k=3 .*'p1'.*'short'"):
        coverage(BASE, short, 3)
    with pytest.raises(RlboundError, match="more than once"):
        coverage(BASE, run("dup", [[1], [1]], ids=["p0", "p0"]), 1)
    with pytest.raises(RlboundError, match="k must be >= 1"):
        coverage(BASE, RL, 0)


def test_coverage_curve_values_and_band():
    cur = coverage_curve(BASE, [4, 1, 2, 2], n_boot=200, seed=1)
    assert cur.ks.tolist() == [1, 2, 4]
    np.testing.assert_allclose(cur.mean, [1 / 5, 2 / 5, 3 / 5])
    assert np.all(cur.lo <= cur.mean) and np.all(cur.mean <= cur.hi)
    assert np.all(cur.lo >= 0) and np.all(cur.hi <= 1)
    d = json.loads(json.dumps(cur.to_dict()))
    assert [p["k"] for p in d["points"]] == [1, 2, 4]
    nob = coverage_curve(BASE, [1], n_boot=0)
    assert math.isnan(nob.lo[0]) and nob.to_dict()["points"][0]["lo"] is None
    with pytest.raises(RlboundError, match="k=5"):
        coverage_curve(BASE, [5])


def test_coverage_curve_all_solved_band_is_degenerate():
    r = run("r", [[1, 0], [0, 1], [1, 1]])
    cur = coverage_curve(r, [2], n_boot=100)
    assert cur.mean[0] == 1.0 and cur.lo[0] == 1.0 and cur.hi[0] == 1.0


# --------------------------------------------------------------------------- support metrics


def test_support_metrics_paper_counts_exact():
    m = support_metrics(P=1355, S=56, E=5, O=131)
    assert abs(m.srr - 1355 / 1411) < 1e-12
    assert abs(m.nscr - (-51 / 1416)) < 1e-12
    assert abs(m.ndr - 5 / 1360) < 1e-12
    srr, ndr = 1355 / 1411, 5 / 1360
    assert abs(m.sds - 2 * srr * ndr / (srr + ndr)) < 1e-12
    assert abs(m.sds - 1 / ((1 / srr + 1 / ndr) / 2)) < 1e-12
    assert m.to_dict()["O"] == 131


def test_support_metrics_zero_denominators_are_nan():
    m = support_metrics(0, 0, 0, 7)
    assert all(math.isnan(x) for x in (m.srr, m.ndr, m.sds, m.nscr))
    assert m.to_dict()["srr"] is None
    m = support_metrics(0, 3, 0, 0)  # SRR = 0, NDR undefined
    assert m.srr == 0.0 and math.isnan(m.ndr) and math.isnan(m.sds) and m.nscr == -1.0
    m = support_metrics(4, 0, 0, 0)
    assert m.srr == 1.0 and m.ndr == 0.0 and m.sds == 0.0 and m.nscr == 0.0
    with pytest.raises(RlboundError):
        support_metrics(-1, 0, 0, 0)


# --------------------------------------------------------------------------- empirical support


def test_empirical_support_categories_and_metrics():
    sup = empirical_support(BASE, RL, 4, zeta=0.05, n_boot=300, seed=3)
    assert sup.preserved == ["p0", "p2"] and sup.shrunk == ["p1"] and sup.expanded == ["p3"] and sup.out == ["p4"]
    m = sup.metrics
    assert (m.P, m.S, m.E, m.O) == (2, 1, 1, 1)
    assert m.srr == pytest.approx(2 / 3) and m.ndr == pytest.approx(1 / 3)
    assert m.sds == pytest.approx(2 * (2 / 3) * (1 / 3) / 1.0) and m.nscr == 0.0
    assert sup.epsilon == pytest.approx(math.log(20) / 4)
    for name in ("srr", "ndr", "sds", "nscr"):
        assert sup.lo[name] <= sup.hi[name]
        assert 0.0 <= sup.undefined_frac[name] < 1.0
    d = json.loads(json.dumps(sup.to_dict()))
    assert d["counts"] == {"P": 2, "S": 1, "E": 1, "O": 1}
    assert d["problems"]["E"] == ["p3"] and d["metrics"]["nscr"]["value"] == 0.0


def test_empirical_support_k_changes_answer():
    sup = empirical_support(BASE, RL, 1, n_boot=0)
    # k=1: base solves p0; rl solves p0, p2
    assert (sup.metrics.P, sup.metrics.S, sup.metrics.E, sup.metrics.O) == (1, 0, 1, 3)
    assert sup.lo == {} and sup.to_dict()["metrics"]["srr"]["lo"] is None


def test_empirical_support_band_is_paired():
    # RL solves exactly what base solves: every paired replicate has S = E = 0, so NSCR band is [0, 0]
    rows = [[1, 0], [0, 0], [0, 1], [1, 1], [0, 0], [1, 0]]
    b, r = run("b", rows), run("r", rows)
    sup = empirical_support(b, r, 2, n_boot=200)
    assert sup.metrics.nscr == 0.0 and sup.lo["nscr"] == 0.0 and sup.hi["nscr"] == 0.0
    assert sup.lo["srr"] == 1.0 and sup.hi["srr"] == 1.0


def test_empirical_support_errors():
    with pytest.raises(RlboundError, match="zeta"):
        empirical_support(BASE, RL, 2, zeta=1.5)
    with pytest.raises(RlboundError, match="k=8"):
        empirical_support(BASE, RL, 8)
    with pytest.raises(RlboundError, match="no problem ids in common"):
        empirical_support(BASE, run("o", [[1]], ids=["q"]), 1)
