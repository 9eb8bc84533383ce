"""Paired differences of a run from a reference run, each with its interval and a flag when that
interval includes 0.

For a run B against a reference A (in the report and the lab: the base model), on their common
problems (matched by id) and at a budget k no larger than any common problem's n:

- Δ pass@1 and Δ pass@k (B − A, means over problems of the unbiased per-problem estimates);
- the boundary at k: problems B solves that A does not (**gained**), that A solves and B does not
  (**lost**), and **net** = gained − lost = B's solved count − A's ("solved": at least one correct
  among the first k samples by index, as in :mod:`rlbound.analysis.coverage`), as problem counts.

Intervals are percentile bootstrap intervals over common problems, paired (each replicate draws
one set of problems for both runs, and for every quantity here); a count's interval is the
replicate share times the number of common problems. A difference whose interval includes 0 is
flagged (``includes_zero``): on these problems it cannot be told apart from no difference at
that level. The interval covers the choice of problems only, not the sampling noise within a
problem (another draw of k samples may solve, or miss, a problem solved by one sample in k).
Gained and lost are never negative, so their flag only says that few problems moved; whether the
boundary moved is read from net, whose interval includes 0 when gains and losses balance.

What it does not do: no correction for the many comparisons of one report (each interval is
marginal), no test of equivalence, no per-group differences (``rlbound.analysis.groups``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rlbound.analysis.bootstrap import bootstrap_means, check_bootstrap_args, percentile_interval
from rlbound.analysis.coverage import _check_k, _subset, match_problems, solved_at_k
from rlbound.analysis.passk import pass_at_k
from rlbound.analysis.samples import RunSamples, json_float

QUANTITIES = ("delta_pass@1", "delta_pass@k", "gained", "lost", "net")


@dataclass(frozen=True)
class Difference:
    """One paired difference (B − A) with its bootstrap interval."""

    name: str
    value: float
    lo: float
    hi: float

    @property
    def includes_zero(self) -> bool:
        """True when the interval contains 0 (or no interval was computed)."""
        return not (self.lo > 0 or self.hi < 0)

    def to_dict(self) -> dict[str, Any]:
        return {"value": json_float(self.value), "lo": json_float(self.lo), "hi": json_float(self.hi),
                "includes_zero": self.includes_zero}


@dataclass
class PairedDifferences:
    """B − A on common problems at pass@1, pass@k and the solved boundary at k."""

    label_a: str
    label_b: str
    k: int
    n_problems: int
    differences: dict[str, Difference]
    ci: float
    n_boot: int

    def __getitem__(self, name: str) -> Difference:
        return self.differences[name]

    def flagged(self) -> list[str]:
        """The quantities whose interval includes 0."""
        return [name for name, d in self.differences.items() if d.includes_zero]

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.label_a, "b": self.label_b, "k": self.k, "n_problems": self.n_problems,
                "ci": self.ci, "n_boot": self.n_boot,
                "definition": "B - A on common problems; gained/lost/net are problem counts solved at k "
                              "(at least one correct among the first k samples); intervals: paired "
                              "percentile bootstrap over problems",
                **{name: d.to_dict() for name, d in self.differences.items()}}


def paired_differences(a: RunSamples, b: RunSamples, k: int, *, n_boot: int = 1000, ci: float = 0.95,
                       seed: int = 0) -> PairedDifferences:
    """Δ pass@1, Δ pass@k and gained / lost / net problems at k of ``b`` against ``a`` (see the
    module docstring). ``k`` larger than some common problem's n raises :class:`RlboundError`."""
    k = _check_k(k, "differences")
    check_bootstrap_args(n_boot, ci)
    common, ia, ib = match_problems(a, b, "differences")
    ks = np.asarray([1, k], dtype=np.int64)
    pa = pass_at_k(a.n[ia], a.c[ia], ks, problem_ids=common)
    pb = pass_at_k(b.n[ib], b.c[ib], ks, problem_ids=common)
    sa = solved_at_k(_subset(a, ia), k, what="differences")
    sb = solved_at_k(_subset(b, ib), k, what="differences")
    per_problem = np.column_stack([pb[:, 0] - pa[:, 0], pb[:, 1] - pa[:, 1],
                                   sb & ~sa, sa & ~sb, sb.astype(float) - sa]).astype(np.float64)
    scale = np.asarray([1.0, 1.0] + [float(len(common))] * 3)
    values = per_problem.mean(axis=0) * scale
    (reps,) = bootstrap_means([per_problem], n_boot, seed)
    lo, hi = percentile_interval(reps * scale, ci)
    diffs = {name: Difference(name, float(v), float(l), float(h))
             for name, v, l, h in zip(QUANTITIES, values, lo, hi)}
    return PairedDifferences(a.label, b.label, k, len(common), diffs, ci, int(n_boot))
