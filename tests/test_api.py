"""The documented Python API: rlbound.pass_at_k, rlbound.load_run, rlbound.verify_math."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pytest

import rlbound


def test_pass_at_k_scalar_and_arrays():
    assert rlbound.pass_at_k(256, 3, 64) == pytest.approx(
        float(1 - Fraction(comb(253, 64), comb(256, 64))), abs=1e-12
    )
    table = rlbound.pass_at_k(np.array([256, 256]), np.array([3, 0]), np.array([1, 64]))
    assert table.shape == (2, 2) and table[1].tolist() == [0.0, 0.0]
    with pytest.raises(rlbound.RlboundError, match="k=300"):
        rlbound.pass_at_k(256, 3, 300)


def test_load_run_and_verify_math(tmp_path):
    from tests.test_store import _run

    _run(tmp_path, n=2, label="demo")
    run = rlbound.load_run(tmp_path / "run")
    assert run.label == "demo" and run.table.num_rows == 12 and list(run.samples.n) == [2] * 6

    verdict = rlbound.verify_math("\\frac{1}{2}", "so the answer is \\boxed{0.5}")
    assert (verdict.answer, verdict.correct, verdict.status) == ("0.5", True, "ok")
    wrong = rlbound.verify_math("\\frac{1}{2}", "the answer is \\boxed{0.33}")
    assert wrong.correct is False and wrong.status == "ok"
    assert rlbound.verify_math("2", "no answer here").status == "no_answer"
