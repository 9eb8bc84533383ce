"""Paired differences from a reference run, on hand-built runs whose differences are known."""

from __future__ import annotations

import numpy as np
import pytest

from rlbound.analysis.differences import paired_differences
from rlbound.analysis.samples import RunSamples
from rlbound.errors import RlboundError


def run(label, rows, ids=None):
    """rows: per problem the correctness of each sample, in sample order."""
    ids = ids or [f"p{i}" for i in range(len(rows))]
    return RunSamples(label, list(ids), [np.array(r, dtype=bool) for r in rows], [])


# 4 samples per problem. p0: both solve (base 1/4, rl 4/4); p1: only rl solves (0 vs 2/4);
# p2: only the base solves (2/4 vs 0); p3: neither.
BASE = run("base", [[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
RL = run("rl", [[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_values_exactly():
    d = paired_differences(BASE, RL, 4, n_boot=0)
    # pass@1 means: base (0.25 + 0 + 0.5 + 0) / 4, rl (1 + 0.5 + 0 + 0) / 4
    assert d["delta_pass@1"].value == pytest.approx(1.5 / 4 - 0.75 / 4)
    # pass@4 = solved at 4 here: base p0, p2; rl p0, p1
    assert d["delta_pass@k"].value == pytest.approx(0.0)
    assert (d["gained"].value, d["lost"].value, d["net"].value) == (1.0, 1.0, 0.0)
    assert d.n_problems == 4 and d.k == 4
    assert d.flagged() == list(d.differences)  # no interval at all: nothing can be told from 0


def test_budget_below_n_uses_the_first_k_samples():
    d = paired_differences(BASE, RL, 2, n_boot=0)
    # first two samples: the base solves p0 and p2; rl solves p0 only (p1's hits are its 3rd and 4th)
    assert (d["gained"].value, d["lost"].value) == (0.0, 1.0)
    assert d["net"].value == -1.0


def test_interval_excludes_zero_for_a_clear_gain_and_includes_it_for_noise():
    rng = np.random.default_rng(0)
    base = run("base", [rng.random(16) < 0.1 for _ in range(200)])
    better = run("better", [rng.random(16) < 0.5 for _ in range(200)])
    same = run("same", [rng.random(16) < 0.1 for _ in range(200)])
    clear = paired_differences(base, better, 16, n_boot=500)
    assert clear["delta_pass@1"].lo > 0 and not clear["delta_pass@1"].includes_zero
    assert clear["net"].lo > 0
    noise = paired_differences(base, same, 16, n_boot=500)
    assert noise["delta_pass@1"].includes_zero
    assert noise["delta_pass@1"].lo < noise["delta_pass@1"].value < noise["delta_pass@1"].hi
    # counts scale with the number of problems: net is solved(same) - solved(base)
    solved = lambda r: sum(bool(np.any(c)) for c in r.correct)  # noqa: E731
    assert noise["net"].value == solved(same) - solved(base)


def test_problems_matched_by_id_and_json_flags():
    shuffled = run("rl", [RL.correct[i] for i in (2, 0, 3, 1)], ids=["p2", "p0", "p3", "p1"])
    a = paired_differences(BASE, RL, 4, n_boot=200).to_dict()
    b = paired_differences(BASE, shuffled, 4, n_boot=200).to_dict()
    assert a["net"]["value"] == b["net"]["value"] == 0.0
    assert a["delta_pass@1"]["value"] == pytest.approx(b["delta_pass@1"]["value"])
    assert isinstance(a["net"]["includes_zero"], bool) and a["net"]["includes_zero"]


def test_k_beyond_n_is_an_error_naming_the_problem():
    with pytest.raises(RlboundError, match="k=8 is larger than n=4"):
        paired_differences(BASE, RL, 8, n_boot=0)
