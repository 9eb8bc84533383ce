"""Seeds: is the difference between RL algorithms larger than the difference between seeds of one?

An RL run is one draw from a noisy process: the same algorithm from the same start model with
another seed (problem order, rollouts, minibatch order) ends elsewhere. "The algorithms perform
alike" (or unlike) can only be told from seed noise with several seeds per algorithm. Here each
*group* (an algorithm, or any treatment) has one number per seed — e.g. the mean pass@1 over the
test problems of the model that seed trained — and:

- :class:`GroupSpread`: per group, the mean over seeds, the sample standard deviation (ddof 1;
  undefined with one seed), min and max;
- :func:`compare_groups`: the one-way ANOVA F statistic (between-group mean square over the
  pooled within-group mean square) with two p-values for "every group has the same mean":
  a **permutation test** over the seed labels (the primary one: it assumes only that, under the
  null, the values are exchangeable between groups; every distinct assignment of the values to
  the groups is enumerated when there are at most ``max_exact`` of them, else ``n_perm`` random
  ones with p = (1 + hits) / (1 + n_perm)), and the **F distribution**'s tail (assumes normal,
  equal-variance seed noise; only when SciPy is installed, else None). With few seeds the
  permutation test cannot give small p-values at all: ``p_min`` is the smallest p these values
  allow (2 groups x 2 seeds: 1/3), so "not distinguishable" may only mean "too few seeds";
- :func:`compare_seed_runs`: the same for runs grouped by algorithm, on pass@k per run (the
  unbiased estimator's mean over the run's problems) at the requested k.

Each seed's value here carries its evaluation noise too (finite test problems; the problems are
the same for every run, so much of that noise is shared); the spread is what a rerun with
another seed would show on these problems.

What it does not do: no I/O; no multiple-comparison correction across metrics; no pairwise
post-hoc tests between groups; no interval for a group's mean from so few seeds (min/max say
more, honestly); no modelling of the problem-level noise (see the per-run bootstrap bands).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from rlbound.analysis.passk import pass_at_k
from rlbound.analysis.samples import RunSamples, json_float
from rlbound.errors import RlboundError

__all__ = ["GroupSpread", "SeedComparison", "compare_groups", "compare_seed_runs"]

MAX_EXACT = 20_000
"""Enumerate every distinct assignment of the values to the groups up to this many."""

N_PERM = 10_000
"""Random assignments drawn above :data:`MAX_EXACT`."""

METHOD = ("one-way ANOVA F = between-group mean square / pooled within-group mean square over the "
          "seeds' values; p: permutation test over seed labels (exact when every distinct assignment "
          "of the values to the groups is enumerated, else Monte Carlo, p = (1 + hits) / (1 + draws)); "
          "p (F distribution): normal equal-variance seed noise assumed (SciPy)")


@dataclass
class GroupSpread:
    """One group's values over seeds (``labels[i]`` gave ``values[i]``)."""

    group: str
    labels: list[str]
    values: np.ndarray

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def sd(self) -> float:
        """Sample standard deviation over seeds (ddof 1); NaN with one seed."""
        return float(self.values.std(ddof=1)) if self.n > 1 else float("nan")

    @property
    def min(self) -> float:
        return float(self.values.min())

    @property
    def max(self) -> float:
        return float(self.values.max())

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "seeds": self.n, "mean": self.mean, "sd": json_float(self.sd),
                "min": self.min, "max": self.max,
                "values": [{"run": label, "value": float(v)} for label, v in zip(self.labels, self.values)]}


@dataclass
class SeedComparison:
    """Groups' spread over seeds and whether the groups differ by more than their seeds do.

    ``f_stat``, ``p_value`` (permutation) and ``p_value_f`` (F distribution) are NaN / None when
    the comparison is undefined (fewer than two groups, or no group with two seeds); ``note`` then
    says why. ``p_min`` is the smallest p-value the permutation test can give for these values (the
    share of assignments reaching the largest F: 1/3 for 2 groups of 2 distinct values; more with ties).
    """

    metric: str
    groups: list[GroupSpread]
    f_stat: float
    p_value: float
    p_value_f: float | None
    p_min: float
    assignments: int
    exact: bool
    df_between: int
    df_within: int
    between_sd: float
    """Standard deviation of the group means (ddof 1)."""
    within_sd: float
    """Pooled within-group standard deviation: sqrt(within-group sum of squares / df_within)."""
    note: str = ""
    alpha: float = 0.05

    @property
    def defined(self) -> bool:
        return not math.isnan(self.p_value)

    @property
    def distinguishable(self) -> bool | None:
        """p (permutation) < alpha; None when the test is undefined."""
        return None if not self.defined else bool(self.p_value < self.alpha)

    def statement(self) -> str:
        """One line reading the comparison."""
        if not self.defined:
            return f"{self.metric}: {self.note}"
        if self.distinguishable:
            verdict = f"the groups differ by more than their seeds do (p < {self.alpha:g})"
        elif self.p_min >= self.alpha:
            verdict = (f"not distinguishable, but these seeds could not show a difference at p < {self.alpha:g} "
                       f"anyway: the smallest p-value any assignment of their values to the {self.n_groups} "
                       f"groups gives is {self.p_min:.3g} (add seeds)")
        else:
            verdict = "not distinguishable from seed noise"
        f_text = "inf" if math.isinf(self.f_stat) else f"{self.f_stat:.3g}"
        return f"{self.metric}: F = {f_text}, permutation p = {self.p_value:.3g}: {verdict}"

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "groups": [g.to_dict() for g in self.groups],
                "f": json_float(self.f_stat), "p_permutation": json_float(self.p_value),
                "p_f_distribution": json_float(self.p_value_f), "p_min": json_float(self.p_min),
                "assignments": self.assignments, "exact": self.exact,
                "df_between": self.df_between, "df_within": self.df_within,
                "between_sd": json_float(self.between_sd), "within_sd": json_float(self.within_sd),
                "alpha": self.alpha, "distinguishable": self.distinguishable,
                "statement": self.statement(), "note": self.note, "method": METHOD}


def _f_statistics(values: np.ndarray, assignment: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """F for each row of ``assignment`` (``(A, N)`` group indices of the N values)."""
    g = len(sizes)
    total = values.sum()
    n = len(values)
    sums = np.zeros((assignment.shape[0], g))
    for j in range(g):  # per group: the sum of the values assigned to it
        sums[:, j] = (values[None, :] * (assignment == j)).sum(axis=1)
    between = (sums ** 2 / sizes[None, :]).sum(axis=1) - total ** 2 / n
    within = float((values ** 2).sum()) - (sums ** 2 / sizes[None, :]).sum(axis=1)
    between = np.maximum(between, 0.0)
    within = np.maximum(within, 0.0)
    scale = max(float((values ** 2).sum()), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (between / (g - 1)) / (within / (n - g))
    # rounding: a within sum of squares at the noise level of the data is 0 (all seeds agree)
    f = np.where(within <= 1e-13 * scale, np.where(between <= 1e-13 * scale, np.nan, np.inf), f)
    return f


def _assignments(sizes: Sequence[int]) -> np.ndarray:
    """Every distinct assignment of N = sum(sizes) positions to groups of these sizes, ``(A, N)``."""
    n = int(sum(sizes))
    rows: list[list[int]] = []

    def fill(row: list[int], free: list[int], j: int) -> None:
        if j == len(sizes) - 1:
            for pos in free:
                row[pos] = j
            rows.append(list(row))
            return
        for chosen in combinations(free, sizes[j]):
            for pos in chosen:
                row[pos] = j
            picked = set(chosen)
            fill(row, [p for p in free if p not in picked], j + 1)

    fill([0] * n, list(range(n)), 0)
    return np.array(rows, dtype=np.int64)


def _count_assignments(sizes: Sequence[int]) -> int:
    count, left = 1, int(sum(sizes))
    for s in sizes:
        count *= math.comb(left, s)
        left -= s
    return count


def _f_tail(f: float, df1: int, df2: int) -> float | None:
    try:
        from scipy.stats import f as f_distribution
    except ImportError:  # SciPy is optional: the permutation p-value is the one reported first
        return None
    if math.isinf(f):
        return 0.0
    return float(f_distribution.sf(f, df1, df2))


def compare_groups(values: Mapping[str, Sequence[float]], *, metric: str = "value",
                   labels: Mapping[str, Sequence[str]] | None = None, alpha: float = 0.05,
                   n_perm: int = N_PERM, max_exact: int = MAX_EXACT, seed: int = 0) -> SeedComparison:
    """Spread over seeds per group and the between- vs within-group comparison of ``values``
    (group → one value per seed). ``labels`` names each value's run (default ``group#i``)."""
    if not values:
        raise RlboundError(f"seeds: no groups to compare for {metric}")
    if not 0.0 < alpha < 1.0:
        raise RlboundError(f"seeds: alpha must be between 0 and 1, got {alpha!r}")
    if int(n_perm) != n_perm or n_perm < 1:
        raise RlboundError(f"seeds: n_perm must be a whole number >= 1, got {n_perm!r}")
    groups = []
    for name, vals in values.items():
        arr = np.asarray(vals, dtype=np.float64).reshape(-1)
        if arr.size == 0:
            raise RlboundError(f"seeds: group {name!r} has no values")
        if not np.all(np.isfinite(arr)):
            raise RlboundError(f"seeds: group {name!r} has a value that is not a finite number")
        names = list((labels or {}).get(name) or [f"{name}#{i}" for i in range(arr.size)])
        if len(names) != arr.size:
            raise RlboundError(f"seeds: group {name!r} has {arr.size} values but {len(names)} labels")
        groups.append(GroupSpread(str(name), [str(x) for x in names], arr))
    sizes = np.array([g.n for g in groups], dtype=np.int64)
    n, g = int(sizes.sum()), len(groups)
    means = np.array([grp.mean for grp in groups])
    between_sd = float(means.std(ddof=1)) if g > 1 else float("nan")
    within_ss = float(sum(((grp.values - grp.mean) ** 2).sum() for grp in groups))
    within_sd = math.sqrt(within_ss / (n - g)) if n > g else float("nan")
    nan = float("nan")
    common = dict(metric=metric, groups=groups, df_between=g - 1, df_within=n - g,
                  between_sd=between_sd, within_sd=within_sd, alpha=alpha)
    if g < 2:
        return SeedComparison(f_stat=nan, p_value=nan, p_value_f=None, p_min=nan, assignments=0, exact=False,
                              note="only one group: nothing to compare", **common)
    if n == g:
        return SeedComparison(f_stat=nan, p_value=nan, p_value_f=None, p_min=nan, assignments=0, exact=False,
                              note="one seed per group: no within-group spread can be measured "
                                   "(train with more seeds: rl.seeds)", **common)
    values_flat = np.concatenate([grp.values for grp in groups])
    observed = np.repeat(np.arange(g), sizes)
    f_obs = float(_f_statistics(values_flat, observed[None, :], sizes)[0])
    if math.isnan(f_obs):
        return SeedComparison(f_stat=nan, p_value=nan, p_value_f=None, p_min=nan, assignments=0, exact=False,
                              note="every seed of every group gave the same value: nothing varies", **common)
    total = _count_assignments(sizes)
    exact = total <= max_exact
    if exact:
        f_all = _f_statistics(values_flat, _assignments(sizes), sizes)
        f_all = np.where(np.isnan(f_all), -np.inf, f_all)
        hits = int((f_all >= f_obs * (1 - 1e-12)).sum())
        p_value = hits / len(f_all)
        p_min = float((f_all >= f_all.max() * (1 - 1e-12)).sum()) / len(f_all)
        drawn = len(f_all)
    else:
        rng = np.random.default_rng(seed)
        perms = np.argsort(rng.random((int(n_perm), n)), axis=1)
        f_all = _f_statistics(values_flat, observed[perms], sizes)
        f_all = np.where(np.isnan(f_all), -np.inf, f_all)
        hits = int((f_all >= f_obs * (1 - 1e-12)).sum())
        p_value = (1 + hits) / (1 + int(n_perm))
        p_min = 1.0 / (1 + int(n_perm))
        drawn = int(n_perm)
    return SeedComparison(f_stat=f_obs, p_value=float(p_value), p_value_f=_f_tail(f_obs, g - 1, n - g),
                          p_min=float(p_min), assignments=drawn, exact=exact, **common)


def compare_seed_runs(groups: Mapping[str, Sequence[RunSamples]], ks: Sequence[int], **kwargs: Any
                      ) -> list[SeedComparison]:
    """:func:`compare_groups` of pass@k per run (mean over its problems), one comparison per k of ``ks``;
    ``groups`` maps a group (an algorithm) to its runs, one per seed."""
    out = []
    for k in ks:
        values = {name: [float(pass_at_k(run.n, run.c, int(k)).mean()) for run in runs]
                  for name, runs in groups.items()}
        labels = {name: [run.label for run in runs] for name, runs in groups.items()}
        out.append(compare_groups(values, metric=f"pass@{int(k)}", labels=labels, **kwargs))
    return out
