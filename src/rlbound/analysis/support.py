"""Empirical support of a base model and its RL model: did RL reach problems the base could not?

Follows Wu et al. 2025, "The Invisible Leash: Why RLVR May Not Escape Its Origin". At a stated
budget k, each common problem (matched by id) is solved by a run when at least one of its first k
samples, by sample index, is correct (:func:`rlbound.analysis.coverage.solved_at_k`). Categories:

- P (preserved): both solve;  S (shrunk): base only;  E (expanded): RL only;  O (out): neither.
- SRR (support retention rate)  = P / (P + S)
- NDR (net discovery rate)      = E / (P + E)
- SDS (support dynamics score)  = harmonic mean of SRR and NDR = 2·SRR·NDR / (SRR + NDR)
- NSCR (net support change rate) = (E − S) / (P + E + S)
- ε = ln(1/ζ) / k beside them: a problem whose per-sample success rate is at least ε is missed in
  k independent samples with probability at most (1 − ε)^k <= e^{−εk} = ζ. So "unsolved at k"
  only says "success rate below about ε" at miss probability ζ, not "impossible".

A metric whose denominator is 0 (e.g. SRR with P + S = 0) is NaN (``None`` in ``to_dict``); SDS is
NaN when SRR or NDR is, or when both are 0. Bootstrap bands resample common problems with
replacement (the same draw for base and RL, i.e. paired); replicates where a metric is undefined
are left out of its band and counted in ``undefined_frac``.

What it does not do: no I/O, no plotting; it does not estimate support beyond the samples drawn,
does not correct for k (read ε), and does not test significance beyond the percentile band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlbound.analysis.bootstrap import bootstrap_means, check_bootstrap_args, percentile_interval
from rlbound.analysis.coverage import _check_k, _subset, match_problems, solved_at_k
from rlbound.analysis.samples import RunSamples, json_float
from rlbound.errors import RlboundError

METRICS = ("srr", "ndr", "sds", "nscr")


def _div(num: Any, den: Any) -> Any:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)
    return out


def _metrics(p: Any, s: Any, e: Any) -> dict[str, Any]:
    """SRR, NDR, SDS, NSCR, vectorised over arrays of (scaled) counts; NaN on a 0 denominator."""
    srr = _div(p, np.add(p, s))
    ndr = _div(e, np.add(p, e))
    sds = _div(2.0 * srr * ndr, srr + ndr)  # NaN propagates from srr/ndr; 0/0 -> NaN
    nscr = _div(np.subtract(e, s), np.add(np.add(p, e), s))
    return {"srr": srr, "ndr": ndr, "sds": sds, "nscr": nscr}


@dataclass
class SupportMetrics:
    """SRR, NDR, SDS, NSCR from the counts P, S, E, O (NaN where a denominator is 0)."""

    P: int
    S: int
    E: int
    O: int
    srr: float
    ndr: float
    sds: float
    nscr: float

    def to_dict(self) -> dict[str, Any]:
        return {"P": self.P, "S": self.S, "E": self.E, "O": self.O,
                **{m: json_float(getattr(self, m)) for m in METRICS}}


def support_metrics(P: int, S: int, E: int, O: int) -> SupportMetrics:
    """The Invisible Leash metrics from category counts alone (see the module docstring)."""
    counts = []
    for name, v in (("P", P), ("S", S), ("E", E), ("O", O)):
        if isinstance(v, bool) or int(v) != v or v < 0:
            raise RlboundError(f"support: count {name} must be a whole number >= 0, got {v!r}")
        counts.append(int(v))
    p, s, e, o = counts
    m = _metrics(p, s, e)
    return SupportMetrics(p, s, e, o, *(float(m[k]) for k in METRICS))


@dataclass
class EmpiricalSupport:
    """Empirical support of ``label_base`` vs ``label_rl`` at budget k over their common problems.

    ``preserved``/``shrunk``/``expanded``/``out`` are the problem ids of P/S/E/O (in base order).
    ``lo``/``hi``/``undefined_frac`` map each metric name to its band and the fraction of bootstrap
    replicates where it was undefined (NaN band when ``n_boot == 0`` or every replicate undefined).
    """

    label_base: str
    label_rl: str
    k: int
    zeta: float
    epsilon: float
    metrics: SupportMetrics
    preserved: list[str]
    shrunk: list[str]
    expanded: list[str]
    out: list[str]
    lo: dict[str, float] = field(default_factory=dict)
    hi: dict[str, float] = field(default_factory=dict)
    undefined_frac: dict[str, float] = field(default_factory=dict)
    ci: float = 0.95
    n_boot: int = 0

    @property
    def n_problems(self) -> int:
        return len(self.preserved) + len(self.shrunk) + len(self.expanded) + len(self.out)

    def to_dict(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "base": self.label_base, "rl": self.label_rl, "k": self.k, "n_problems": self.n_problems,
            "zeta": self.zeta, "epsilon": self.epsilon,
            "counts": {"P": m.P, "S": m.S, "E": m.E, "O": m.O},
            "metrics": {name: {"value": json_float(getattr(m, name)), "lo": json_float(self.lo.get(name)),
                               "hi": json_float(self.hi.get(name)),
                               "undefined_frac": json_float(self.undefined_frac.get(name))}
                        for name in METRICS},
            "ci": self.ci, "n_boot": self.n_boot,
            "problems": {"P": list(self.preserved), "S": list(self.shrunk),
                         "E": list(self.expanded), "O": list(self.out)},
        }


def empirical_support(
    base: RunSamples, rl: RunSamples, k: int, zeta: float = 0.05, *,
    n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
) -> EmpiricalSupport:
    """P/S/E/O at budget k (≥1 correct in the first k samples) and SRR/NDR/SDS/NSCR with paired bands.

    Problems are matched by id (intersection; an error if none are common); k > n for any common
    problem raises :class:`RlboundError` naming it. ``zeta`` in (0, 1) gives ε = ln(1/ζ)/k.
    """
    check_bootstrap_args(n_boot, ci)
    k = _check_k(k, "support")
    if not 0.0 < float(zeta) < 1.0:
        raise RlboundError(f"support: zeta (miss probability) must be between 0 and 1, got {zeta!r}")
    common, ib, ir = match_problems(base, rl, "support")
    sb = solved_at_k(_subset(base, ib), k, what="support")
    sr = solved_at_k(_subset(rl, ir), k, what="support")
    masks = np.stack([sb & sr, sb & ~sr, ~sb & sr, ~sb & ~sr], axis=1)  # P, S, E, O
    pick = lambda col: [p for p, m in zip(common, masks[:, col]) if m]  # noqa: E731
    counts = masks.sum(axis=0)
    metrics = support_metrics(*(int(x) for x in counts))
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    undef: dict[str, float] = {}
    if n_boot:
        (reps,) = bootstrap_means([masks.astype(np.float64)], n_boot, seed)  # (n_boot, 4) fractions
        rep_m = _metrics(reps[:, 0], reps[:, 1], reps[:, 2])
        for name in METRICS:
            vals = rep_m[name]
            ok = np.isfinite(vals)
            undef[name] = float(1.0 - ok.mean())
            if ok.any():
                l, h = percentile_interval(vals[ok], ci)
                lo[name], hi[name] = float(l), float(h)
            else:
                lo[name] = hi[name] = float("nan")
    return EmpiricalSupport(base.label, rl.label, k, float(zeta), math.log(1.0 / float(zeta)) / k,
                            metrics, pick(0), pick(1), pick(2), pick(3), lo, hi, undef, ci, int(n_boot))
