"""Coverage: which problems a run solves at a sample budget k, and how two runs' solved sets overlap.

"Solved at budget k" here is the plain, per-run definition: at least one correct sample among
the first k samples of the problem, by sample index (``correct[i][:k].any()``). It is *not* the
unbiased pass@k > 0 (which is positive whenever c > 0 and n >= k, i.e. would ignore k); it is
the observed outcome of the first k draws, as in the coverage / empirical-support analyses of
Yue et al. 2025 ("Does Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs
Beyond the Base Model?") and Wu et al. 2025 ("The Invisible Leash").

- :func:`solved_at_k` — per-problem bool array for one run (k > n for any problem is an error).
- :func:`match_problems` — the shared "match two runs by problem id" step (intersection, in A's
  order; an error when nothing is common or a run repeats an id). :mod:`support` and
  :mod:`efficiency` reuse it.
- :func:`coverage` — problems solved by A only, B only, both, neither (:class:`Coverage`).
- :func:`coverage_curve` — fraction of problems solved at each k with a percentile bootstrap band
  over problems (:class:`CoverageCurve`).

What it does not do: no I/O, no plotting, no verification; it does not estimate coverage beyond
the samples drawn (use pass@k for that) and does not reorder samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlbound.analysis.bootstrap import bootstrap_means, check_bootstrap_args, percentile_interval
from rlbound.analysis.samples import RunSamples, json_float, match_problem_ids
from rlbound.errors import RlboundError


def _check_k(k: Any, what: str) -> int:
    if isinstance(k, bool) or int(k) != k:
        raise RlboundError(f"{what}: k must be a whole number, got {k!r}")
    k = int(k)
    if k < 1:
        raise RlboundError(f"{what}: k must be >= 1, got k={k}")
    return k


def solved_at_k(run: RunSamples, k: int, *, what: str = "coverage") -> np.ndarray:
    """Per problem of ``run``: True when at least one of its first k samples (by index) is correct.

    Raises :class:`RlboundError` naming the run and the first problem with fewer than k samples.
    """
    k = _check_k(k, what)
    out = np.empty(len(run.problem_ids), dtype=bool)
    for i, (pid, cor) in enumerate(zip(run.problem_ids, run.correct)):
        cor = np.asarray(cor)
        if k > cor.shape[0]:
            raise RlboundError(
                f"{what}: k={k} is larger than n={cor.shape[0]} samples for problem {str(pid)!r} "
                f"of run {run.label!r}; ask for a smaller k or sample more"
            )
        out[i] = bool(np.any(cor[:k]))
    return out


def match_problems(a: RunSamples, b: RunSamples, what: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(common ids in A's order, their indices in A, their indices in B); see
    :func:`rlbound.analysis.samples.match_problem_ids`."""
    return match_problem_ids(a.label, a.problem_ids, b.label, b.problem_ids, what)


def _subset(run: RunSamples, idx: np.ndarray) -> RunSamples:
    """The run restricted to problems ``idx`` (only the fields coverage needs)."""
    return RunSamples(run.label, [run.problem_ids[i] for i in idx], [run.correct[i] for i in idx],
                      [run.answers[i] for i in idx] if run.answers else [])


# --------------------------------------------------------------------------- two-run coverage


@dataclass
class Coverage:
    """Two runs' solved sets at budget k over their common problems (ids in A's order)."""

    label_a: str
    label_b: str
    k: int
    n_problems: int
    a_only: list[str]
    b_only: list[str]
    both: list[str]
    neither: list[str]
    n_only_in_a: int  # problems of A not in B (left out)
    n_only_in_b: int  # problems of B not in A (left out)

    @property
    def solved_a(self) -> int:
        return len(self.a_only) + len(self.both)

    @property
    def solved_b(self) -> int:
        return len(self.b_only) + len(self.both)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.label_a, "b": self.label_b, "k": self.k, "n_problems": self.n_problems,
            "solved_definition": "at least one correct among the first k samples (by sample index)",
            "counts": {"a_only": len(self.a_only), "b_only": len(self.b_only),
                       "both": len(self.both), "neither": len(self.neither)},
            "solved_a": self.solved_a, "solved_b": self.solved_b,
            "a_only": list(self.a_only), "b_only": list(self.b_only),
            "both": list(self.both), "neither": list(self.neither),
            "unmatched": {"only_in_a": self.n_only_in_a, "only_in_b": self.n_only_in_b},
        }


def coverage(a: RunSamples, b: RunSamples, k: int) -> Coverage:
    """Problems solved at budget k (≥1 correct among the first k samples) by A only, B only, both, neither.

    Only problems present in both runs count (matched by id); k > n for any common problem raises
    :class:`RlboundError` naming it.
    """
    k = _check_k(k, "coverage")
    common, ia, ib = match_problems(a, b, "coverage")
    sa = solved_at_k(_subset(a, ia), k)
    sb = solved_at_k(_subset(b, ib), k)
    pick = lambda mask: [p for p, m in zip(common, mask) if m]  # noqa: E731
    return Coverage(
        a.label, b.label, k, len(common),
        pick(sa & ~sb), pick(~sa & sb), pick(sa & sb), pick(~sa & ~sb),
        len(a.problem_ids) - len(common), len(b.problem_ids) - len(common),
    )


# --------------------------------------------------------------------------- one-run curve


@dataclass
class CoverageCurve:
    """Fraction of problems with ≥1 correct among the first k samples, per k, with a bootstrap band.

    ``solved[i, j]``: problem ``problem_ids[i]`` solved at ``ks[j]``. ``lo``/``hi`` are the ``ci``
    percentile band over problems (NaN when ``n_boot == 0``).
    """

    label: str
    ks: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    solved: np.ndarray
    problem_ids: list[str]
    ci: float
    n_boot: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "n_problems": len(self.problem_ids), "ci": self.ci, "n_boot": self.n_boot,
            "points": [{"k": int(k), "mean": float(m), "lo": json_float(lo), "hi": json_float(hi)}
                       for k, m, lo, hi in zip(self.ks, self.mean, self.lo, self.hi)],
        }


def coverage_curve(
    run: RunSamples, ks: Sequence[int], *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> CoverageCurve:
    """Fraction of ``run``'s problems solved at each k in ``ks`` (sorted, unique), with a bootstrap band.

    k > n for any problem raises :class:`RlboundError` naming it.
    """
    check_bootstrap_args(n_boot, ci)
    if not run.problem_ids:
        raise RlboundError(f"coverage: run {run.label!r} has no problems")
    k_arr = np.unique(np.asarray([_check_k(k, "coverage") for k in ks], dtype=np.int64))
    if k_arr.size == 0:
        raise RlboundError("coverage: no k to evaluate")
    solved = np.stack([solved_at_k(run, int(k)) for k in k_arr], axis=1)
    (reps,) = bootstrap_means([solved.astype(np.float64)], n_boot, seed)
    lo, hi = percentile_interval(reps, ci)
    return CoverageCurve(run.label, k_arr, solved.mean(axis=0), lo, hi, solved,
                         [str(p) for p in run.problem_ids], ci, int(n_boot), seed)
