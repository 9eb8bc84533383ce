"""Sampling-efficiency gap: how far RL's pass@1 is from the base model's pass@k_ref.

ΔSE = pass@k_ref(base) − pass@1(RL), with k_ref stated (default 256), following the "sampling
efficiency gap" of Yue et al. 2025 ("Does Reinforcement Learning Really Incentivize Reasoning
Capacity in LLMs Beyond the Base Model?"). A large positive gap means RL sharpened sampling toward
answers the base model already reaches with k_ref samples but is far from that upper bound.

Both terms use THE pass@k estimator (:func:`rlbound.analysis.passk.pass_at_k`, unbiased, Chen et
al. 2021); pass@1 is then c/n. Problems are matched by id (intersection); the band is a paired
percentile bootstrap over common problems (one resample applied to base and RL together).

What it does not do: no I/O, no plotting; k_ref > n for a base problem is an error (never
silently lowered); it does not pick k_ref for you.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rlbound.analysis.bootstrap import bootstrap_means, check_bootstrap_args, percentile_interval
from rlbound.analysis.coverage import _check_k, match_problems
from rlbound.analysis.passk import pass_at_k
from rlbound.analysis.samples import RunSamples, json_float
from rlbound.errors import RlboundError

DEFAULT_K_REF = 256


@dataclass
class SamplingEfficiencyGap:
    """ΔSE = pass@k_ref(base) − pass@1(RL) over common problems, each term and ΔSE with a band."""

    label_base: str
    label_rl: str
    k_ref: int
    n_problems: int
    base_pass_at_k_ref: float
    rl_pass_at_1: float
    delta: float
    lo: float
    hi: float
    base_lo: float
    base_hi: float
    rl_lo: float
    rl_hi: float
    problem_ids: list[str]
    ci: float
    n_boot: int

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.label_base, "rl": self.label_rl, "k_ref": self.k_ref,
                "n_problems": self.n_problems,
                "base_pass_at_k_ref": {"mean": self.base_pass_at_k_ref, "lo": json_float(self.base_lo),
                                       "hi": json_float(self.base_hi)},
                "rl_pass_at_1": {"mean": self.rl_pass_at_1, "lo": json_float(self.rl_lo), "hi": json_float(self.rl_hi)},
                "delta_se": {"mean": self.delta, "lo": json_float(self.lo), "hi": json_float(self.hi)},
                "ci": self.ci, "n_boot": self.n_boot}


def sampling_efficiency_gap(
    base: RunSamples, rl: RunSamples, k_ref: int = DEFAULT_K_REF, *,
    n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
) -> SamplingEfficiencyGap:
    """ΔSE = mean pass@k_ref(base) − mean pass@1(RL) over common problems, with a paired bootstrap band.

    Raises :class:`RlboundError` when the runs share no problem id, or k_ref exceeds some common
    base problem's sample count (the message suggests a smaller ``--k-ref``).
    """
    check_bootstrap_args(n_boot, ci)
    k_ref = _check_k(k_ref, "sampling efficiency gap")
    common, ib, ir = match_problems(base, rl, "sampling efficiency gap")
    nb, cb = base.n[ib], base.c[ib]
    nr, cr = rl.n[ir], rl.c[ir]
    if nb.min() < k_ref:
        i = int(np.argmin(nb))
        raise RlboundError(
            f"sampling efficiency gap: k_ref={k_ref} is larger than n={int(nb[i])} samples for problem "
            f"{common[i]!r} of base run {base.label!r}; pass a smaller --k-ref (at most {int(nb.min())}) "
            f"or sample more"
        )
    if nr.min() < 1:
        i = int(np.argmin(nr))
        raise RlboundError(f"sampling efficiency gap: problem {common[i]!r} of RL run {rl.label!r} has no samples")
    pb = np.asarray(pass_at_k(nb, cb, k_ref, problem_ids=common), dtype=np.float64).reshape(-1)
    pr = np.asarray(pass_at_k(nr, cr, 1, problem_ids=common), dtype=np.float64).reshape(-1)
    diff = pb - pr
    reps_b, reps_r, reps_d = bootstrap_means([pb, pr, diff], n_boot, seed)
    (lo, hi), (blo, bhi), (rlo, rhi) = (percentile_interval(r, ci) for r in (reps_d, reps_b, reps_r))
    return SamplingEfficiencyGap(
        base.label, rl.label, k_ref, len(common), float(pb.mean()), float(pr.mean()), float(diff.mean()),
        float(lo), float(hi), float(blo), float(bhi), float(rlo), float(rhi), common, ci, int(n_boot),
    )


# Short alias matching the DESIGN name.
delta_se = sampling_efficiency_gap
