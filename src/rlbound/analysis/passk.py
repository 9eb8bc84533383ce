"""pass@k, maj@k and the base/RL crossover: the boundary numbers of one or two runs.

- :func:`pass_at_k` is THE pass@k estimator of rlbound: the unbiased estimator of Chen et al.
  2021 ("Evaluating Large Language Models Trained on Code"), 1 − C(n−c, k)/C(n, k), computed in
  a stable product form and vectorised over problems and k. k > n is an error, never dropped.
- :func:`pass_at_k_curve` averages it over problems at k = 1, 2, 4, …, n with a percentile
  bootstrap band over problems (:class:`PassAtKCurve`).
- :func:`maj_at_k` is majority voting over the first k samples (:class:`MajAtK`).
- :func:`crossover` finds the smallest k from which one run's curve stays at or above another's,
  on every integer k up to n, with a paired bootstrap interval (:class:`Crossover`).
- :func:`accuracy_histogram` bins per-problem accuracy c/n for the report.

What it does not do: no I/O, no sampling, no plotting, no verification (a sample arrives here
already marked correct or not). maj@k votes on the extracted answer strings exactly as given:
deciding that "1/2" and "0.5" are the same answer is the verifier's job, upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from rlbound.analysis.bootstrap import bootstrap_means, check_bootstrap_args, percentile_interval
from rlbound.analysis.samples import RunSamples, json_float, match_problem_ids
from rlbound.errors import RlboundError

# Largest (problems × k) block evaluated at once; bounds memory for many problems × large n.
_BLOCK_ELEMENTS = 4_000_000
# Differences of mean pass@k below this are float noise, not one curve being above the other.
_TIE_TOL = 1e-12


# --------------------------------------------------------------------------- the estimator


def _as_counts(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == bool:
        a = a.astype(np.int64)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise RlboundError(f"pass@k: {name} must be whole numbers")
    elif a.dtype.kind not in "iu":
        raise RlboundError(f"pass@k: {name} must be integers, got {a.dtype}")
    return a.astype(np.int64)


def _problem_name(problem_ids: Sequence[Any] | None, i: int) -> str:
    if problem_ids is not None and i < len(problem_ids):
        return f"problem {str(problem_ids[i])!r}"
    return f"problem #{i}"


def _validate(n: np.ndarray, c: np.ndarray, ks: np.ndarray, problem_ids) -> None:
    """n, c 1-D per problem; ks 1-D. Raises RlboundError naming the first offending problem."""
    for arr, what in ((n, "n (samples)"), (c, "c (correct samples)")):
        bad = np.flatnonzero(arr < 0)
        if bad.size:
            i = int(bad[0])
            raise RlboundError(f"pass@k: {what} is negative ({arr[i]}) for {_problem_name(problem_ids, i)}")
    bad = np.flatnonzero(c > n)
    if bad.size:
        i = int(bad[0])
        raise RlboundError(
            f"pass@k: c={c[i]} correct samples exceeds n={n[i]} samples for {_problem_name(problem_ids, i)}"
        )
    if ks.size and ks.min() < 1:
        raise RlboundError(f"pass@k: k must be >= 1, got k={int(ks.min())}")
    if ks.size and n.size:
        kmax = int(ks.max())
        bad = np.flatnonzero(n < kmax)
        if bad.size:
            i = int(bad[0])
            more = f" ({bad.size} problems have fewer than {kmax} samples)" if bad.size > 1 else ""
            raise RlboundError(
                f"pass@k: k={kmax} is larger than n={n[i]} samples for "
                f"{_problem_name(problem_ids, i)}{more}; ask for k <= {int(n.min())} or sample more"
            )


def _pass_matrix(n: np.ndarray, c: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """``(P, K)`` pass@k for validated 1-D n, c and ks (all k <= min n).

    log C(n−c,k)/C(n,k) = Σ_{j=0}^{k−1} log1p(−c/(n−j)) — the product form
    Π_{j<k} (1 − c/(n−j)), equal to Chen et al.'s Π_{i=n−c+1}^{n} (1 − k/i) — accumulated with
    one cumulative sum for all k up to max(ks); a term with n−j <= c makes the ratio 0 (every
    k-subset holds a correct sample). pass = −expm1(log ratio) keeps full relative accuracy for
    small pass@k as well as absolute accuracy near 1.
    """
    p, kmax = n.shape[0], int(ks.max())
    out = np.empty((p, ks.shape[0]))
    j = np.arange(kmax)
    rows = max(1, _BLOCK_ELEMENTS // kmax)
    for s in range(0, p, rows):
        nb, cb = n[s : s + rows, None], c[s : s + rows, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.log1p(-cb / (nb - j[None, :]))
        terms[j[None, :] >= nb - cb] = -np.inf
        np.cumsum(terms, axis=1, out=terms)
        out[s : s + rows] = 0.0 - np.expm1(terms[:, ks - 1])
    return out


def pass_at_k(n: Any, c: Any, k: Any, *, problem_ids: Sequence[Any] | None = None) -> Any:
    """Unbiased pass@k, 1 − C(n−c, k)/C(n, k) (Chen et al. 2021), exact to ~1e-13.

    Broadcasting: ``n`` and ``c`` (ints or arrays, one entry per problem) broadcast against each
    other to the problem shape S (``()`` or ``(P,)``). ``k`` is an int or a 1-D array of K values
    applied to every problem. The result has shape S for an int k and ``S + (K,)`` for an array
    k; so per-problem arrays with an array of k give a ``(P, K)`` matrix, and all-scalar inputs
    give a Python float.

    Raises :class:`RlboundError` for negative n or c, c > n, k < 1, and k > n for any problem;
    the message names the problem (``problem_ids[i]`` when given, else its index).
    """
    try:
        n_arr, c_arr = np.broadcast_arrays(_as_counts(n, "n"), _as_counts(c, "c"))
    except ValueError:
        raise RlboundError(f"pass@k: n and c have different lengths ({np.shape(n)} vs {np.shape(c)})") from None
    k_arr = _as_counts(k, "k")
    if n_arr.ndim > 1 or k_arr.ndim > 1:
        raise RlboundError("pass@k: n and c must be scalars or 1-D per-problem arrays, k a scalar or 1-D")
    shape = n_arr.shape
    n1, c1, ks = n_arr.reshape(-1), c_arr.reshape(-1), k_arr.reshape(-1)
    _validate(n1, c1, ks, problem_ids)
    if n1.size == 0 or ks.size == 0:
        res = np.zeros((n1.size, ks.size))
    else:
        res = _pass_matrix(n1, c1, ks)
    if k_arr.ndim == 0:
        res = res[:, 0]
        return float(res[0]) if shape == () else res.reshape(shape)
    return res.reshape(shape + (ks.size,))


# --------------------------------------------------------------------------- inputs


SamplesLike = Union[RunSamples, "PassAtKCurve", tuple]


def _unpack(samples: Any) -> tuple[str, list[str], np.ndarray, np.ndarray]:
    """(label, problem_ids, n, c) from a RunSamples, a PassAtKCurve or an (n, c) pair."""
    if isinstance(samples, RunSamples):
        label, ids, n, c = samples.label, [str(p) for p in samples.problem_ids], samples.n, samples.c
    elif isinstance(samples, PassAtKCurve):
        label, ids, n, c = samples.label, list(samples.problem_ids), samples.n, samples.c
    elif isinstance(samples, tuple) and len(samples) == 2:
        n, c = (np.atleast_1d(_as_counts(x, name)) for x, name in zip(samples, ("n", "c")))
        if n.shape != c.shape or n.ndim != 1:
            raise RlboundError("pass@k: n and c must be 1-D per-problem arrays of the same length")
        label, ids = "", [str(i) for i in range(n.size)]
    else:
        raise TypeError(f"expected RunSamples, PassAtKCurve or an (n, c) pair, got {type(samples).__name__}")
    if len(ids) == 0:
        raise RlboundError(f"pass@k: run {label!r} has no problems")
    return label, ids, np.asarray(n, dtype=np.int64), np.asarray(c, dtype=np.int64)


def default_ks(n_min: int, extra_ks: Sequence[int] = ()) -> np.ndarray:
    """k = 1, 2, 4, … up to ``n_min``, plus ``n_min`` itself and any ``extra_ks`` (sorted, unique)."""
    ks = [1 << i for i in range(max(int(n_min), 1).bit_length()) if (1 << i) <= n_min]
    ks += [int(n_min)] if n_min >= 1 else []
    ks += [int(k) for k in extra_ks]
    return np.unique(np.asarray(ks, dtype=np.int64))


def _with_label(label: str, err: RlboundError) -> RlboundError:
    return RlboundError(f"run {label!r}: {err}") if label else err


# --------------------------------------------------------------------------- pass@k curve


@dataclass
class PassAtKCurve:
    """Mean pass@k over problems with a percentile bootstrap band over problems.

    ``per_problem[i, j]`` is problem ``problem_ids[i]``'s pass@``ks[j]``; ``n``/``c`` are kept so
    the curve can be re-evaluated at any k (the crossover does, on every integer k).
    ``lo``/``hi`` are NaN when ``n_boot == 0``.
    """

    label: str
    ks: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    per_problem: np.ndarray
    problem_ids: list[str]
    n: np.ndarray
    c: np.ndarray
    ci: float
    n_boot: int
    seed: int

    @property
    def n_problems(self) -> int:
        return len(self.problem_ids)

    def at(self, k: int) -> tuple[float, float, float]:
        """(mean, lo, hi) at one of this curve's ks."""
        hit = np.flatnonzero(self.ks == k)
        if not hit.size:
            raise RlboundError(f"pass@k: k={k} is not on the curve of {self.label!r} (ks: {self.ks.tolist()})")
        j = int(hit[0])
        return float(self.mean[j]), float(self.lo[j]), float(self.hi[j])

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "n_problems": self.n_problems,
            "ci": self.ci,
            "n_boot": self.n_boot,
            "points": [
                {"k": int(k), "mean": float(m), "lo": json_float(lo), "hi": json_float(hi)}
                for k, m, lo, hi in zip(self.ks, self.mean, self.lo, self.hi)
            ],
        }


def pass_at_k_curve(
    samples: SamplesLike,
    ks: Sequence[int] | None = None,
    extra_ks: Sequence[int] = (),
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> PassAtKCurve:
    """pass@k averaged over problems, with a ``ci`` percentile bootstrap band (``n_boot`` resamples).

    ``samples``: a :class:`RunSamples` or an ``(n, c)`` pair of per-problem arrays. ``ks``
    defaults to 1, 2, 4, … up to the smallest n (and that n); ``extra_ks`` are added either way.
    A requested k above some problem's n raises :class:`RlboundError` naming the problem.
    """
    check_bootstrap_args(n_boot, ci)
    label, ids, n, c = _unpack(samples)
    base = default_ks(int(n.min())) if ks is None else np.asarray(list(ks), dtype=np.int64)
    k_arr = np.unique(np.concatenate([base, np.asarray(list(extra_ks), dtype=np.int64)]))
    if k_arr.size == 0:
        raise RlboundError(f"pass@k: no k to evaluate for run {label!r} (some problem has no samples?)")
    try:
        matrix = pass_at_k(n, c, k_arr, problem_ids=ids)
    except RlboundError as err:
        raise _with_label(label, err) from None
    (reps,) = bootstrap_means([matrix], n_boot, seed)
    lo, hi = percentile_interval(reps, ci)
    return PassAtKCurve(label, k_arr, matrix.mean(axis=0), lo, hi, matrix, ids, n, c, ci, int(n_boot), seed)


# --------------------------------------------------------------------------- maj@k


@dataclass
class MajAtK:
    """Majority vote over the first k samples of each problem.

    ``correct[i]``: whether problem ``problem_ids[i]``'s voted answer is correct. ``mean`` is the
    fraction of problems voted correct, ``lo``/``hi`` its percentile bootstrap band over problems
    (NaN when ``n_boot == 0``).
    """

    label: str
    k: int
    correct: np.ndarray
    mean: float
    lo: float
    hi: float
    problem_ids: list[str]
    ci: float
    n_boot: int

    @property
    def n_problems(self) -> int:
        return len(self.problem_ids)

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "mean": self.mean, "lo": json_float(self.lo), "hi": json_float(self.hi), "ci": self.ci}


def _vote(answers: Sequence[str | None], correct: Sequence[Any], k: int) -> bool:
    """The first k samples vote; None does not vote; ties go to the answer that appeared first.

    The voted answer counts as correct when its first sample was verified correct (the verifier
    gives one verdict per (reference, answer), so its other samples agree).
    """
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i in range(k):
        a = answers[i]
        if a is None:
            continue
        if a not in counts:
            counts[a], first[a] = 0, i
        counts[a] += 1
    if not counts:
        return False
    best = max(counts, key=lambda a: (counts[a], -first[a]))
    return bool(correct[first[best]])


def maj_at_k(
    answers_by_problem: Sequence[Sequence[str | None]],
    correct_by_problem: Sequence[Sequence[Any]],
    k: int,
    *,
    problem_ids: Sequence[Any] | None = None,
    label: str = "",
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> MajAtK:
    """maj@k: per problem, the most frequent non-None answer among samples 0..k−1 (by sample index).

    Ties are broken by first appearance (the tied answer whose earliest sample comes first wins);
    a problem where none of the k samples has an answer counts as wrong. k > n for a problem
    raises :class:`RlboundError` naming it.
    """
    check_bootstrap_args(n_boot, ci)
    if len(answers_by_problem) != len(correct_by_problem):
        raise RlboundError("maj@k: answers and correctness cover different numbers of problems")
    ids = [str(p) for p in problem_ids] if problem_ids is not None else [str(i) for i in range(len(answers_by_problem))]
    if not ids:
        raise RlboundError(f"maj@k: run {label!r} has no problems")
    k = int(k)
    if k < 1:
        raise RlboundError(f"maj@k: k must be >= 1, got k={k}")
    per = np.empty(len(ids), dtype=bool)
    for i, (ans, cor) in enumerate(zip(answers_by_problem, correct_by_problem)):
        if len(ans) != len(cor):
            raise RlboundError(f"maj@k: {_problem_name(ids, i)} has {len(ans)} answers but {len(cor)} verdicts")
        if k > len(ans):
            raise _with_label(label, RlboundError(
                f"maj@k: k={k} is larger than n={len(ans)} samples for {_problem_name(ids, i)}"
            ))
        per[i] = _vote(ans, cor, k)
    (reps,) = bootstrap_means([per.astype(np.float64)], n_boot, seed)
    lo, hi = percentile_interval(reps, ci)
    return MajAtK(label, k, per, float(per.mean()), float(lo), float(hi), ids, ci, int(n_boot))


def maj_at_k_run(run: RunSamples, k: int, **kwargs: Any) -> MajAtK:
    """:func:`maj_at_k` over one :class:`RunSamples` (its answers, correctness, ids and label)."""
    return maj_at_k(run.answers, run.correct, k, problem_ids=run.problem_ids, label=run.label, **kwargs)


# --------------------------------------------------------------------------- crossover


@dataclass
class Crossover:
    """Where run B's pass@k curve catches up with run A's for good.

    ``k``: the smallest k such that mean pass@k of B >= that of A for every integer k from there
    up to ``k_max`` (the smallest n over both runs' common problems); 1 when B is never below A;
    None when B is still below A at ``k_max`` ("no crossover up to n"). ``lo``/``hi``: percentile
    interval over paired bootstrap replicates (the same problem resample for both runs); None
    there means that quantile falls on replicates with no crossover up to n. ``frac_none``: the
    fraction of replicates with no crossover. ``mean_a``/``mean_b``: pass@k for k = 1..k_max.
    """

    label_a: str
    label_b: str
    k: int | None
    lo: int | None
    hi: int | None
    frac_none: float
    k_max: int
    n_problems: int
    mean_a: np.ndarray
    mean_b: np.ndarray
    ci: float
    n_boot: int

    def statement(self) -> str:
        a, b, km = self.label_a or "A", self.label_b or "B", self.k_max
        head = (f"pass@1 {a} {self.mean_a[0]:.3f} vs {b} {self.mean_b[0]:.3f}; "
                f"pass@{km} {a} {self.mean_a[-1]:.3f} vs {b} {self.mean_b[-1]:.3f}")
        if self.k is None:
            main = f"no crossover up to n={km}: {b} is still below {a} at k={km}"
        elif self.k == 1:
            main = f"{b} is at or above {a} at every k from 1 to {km} (no crossover needed)"
        else:
            main = f"{b} overtakes {a} at k={self.k} and stays at or above it up to n={km}"
        if self.n_boot:
            none = f"{self.frac_none:.1%} of {self.n_boot} bootstrap replicates have no crossover up to n"
            if self.lo is None:
                main += f" ({none})"
            else:
                hi = f"beyond n={km}" if self.hi is None else str(self.hi)
                main += f" ({self.ci:.0%} bootstrap interval for the crossover k: {self.lo} to {hi}; {none})"
        return f"{main}. {head}."

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.label_a, "b": self.label_b, "k": self.k, "lo": self.lo, "hi": self.hi,
            "frac_none": self.frac_none, "k_max": self.k_max, "n_problems": self.n_problems,
            "ci": self.ci, "n_boot": self.n_boot,
            "pass_at_1": {"a": float(self.mean_a[0]), "b": float(self.mean_b[0])},
            "pass_at_k_max": {"a": float(self.mean_a[-1]), "b": float(self.mean_b[-1])},
            "statement": self.statement(),
        }


def _crossover_k(diff: np.ndarray) -> np.ndarray:
    """Per row of ``diff`` (B − A over k = 1..N): 1 + the last k where B < A, or 1; N+1 means none."""
    bad = diff < -_TIE_TOL
    n_k = diff.shape[-1]
    last_bad = n_k - 1 - np.argmax(bad[..., ::-1], axis=-1)
    return np.where(bad.any(axis=-1), last_bad + 2, 1)


def crossover(
    a: SamplesLike, b: SamplesLike, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> Crossover:
    """The smallest k from which B's mean pass@k stays at or above A's, on every k = 1..min n.

    ``a``/``b``: :class:`RunSamples`, :class:`PassAtKCurve` or ``(n, c)`` pairs. Problems are
    matched by id and only the common ones count (an error if there are none); ``(n, c)`` pairs
    use their positions as ids. The interval resamples common problems, pairing both runs.
    """
    check_bootstrap_args(n_boot, ci)
    la, ids_a, na, ca = _unpack(a)
    lb, ids_b, nb, cb = _unpack(b)
    common, ia, ib = match_problem_ids(la, ids_a, lb, ids_b, "crossover")
    na, ca, nb, cb = na[ia], ca[ia], nb[ib], cb[ib]
    k_max = int(min(na.min(), nb.min()))
    if k_max < 1:
        raise RlboundError(f"crossover: some common problem of {la!r} and {lb!r} has no samples")
    ks = np.arange(1, k_max + 1)
    ma = pass_at_k(na, ca, ks, problem_ids=common)
    mb = pass_at_k(nb, cb, ks, problem_ids=common)
    mean_a, mean_b = ma.mean(axis=0), mb.mean(axis=0)
    k_hat = int(_crossover_k(mean_b - mean_a))
    lo = hi = None
    frac_none = float("nan")
    if n_boot:
        reps_a, reps_b = bootstrap_means([ma, mb], n_boot, seed)
        k_reps = _crossover_k(reps_b - reps_a)
        frac_none = float(np.mean(k_reps > k_max))
        alpha = (1.0 - ci) / 2.0
        qlo = int(np.quantile(k_reps, alpha, method="lower"))
        qhi = int(np.quantile(k_reps, 1.0 - alpha, method="higher"))
        lo = None if qlo > k_max else qlo
        hi = None if qhi > k_max else qhi
    return Crossover(la, lb, None if k_hat > k_max else k_hat, lo, hi, frac_none, k_max,
                     len(common), mean_a, mean_b, ci, int(n_boot))


# --------------------------------------------------------------------------- accuracy histogram

ACCURACY_BINS = ["0", "(0,0.1]"] + [f"({i / 10:.1f},{(i + 1) / 10:.1f}]" for i in range(1, 9)] + ["(0.9,1)", "1"]


def accuracy_histogram(n: Any, c: Any) -> np.ndarray:
    """Counts of problems per accuracy bin {0}, (0,0.1], …, (0.8,0.9], (0.9,1), {1} (``ACCURACY_BINS``).

    Binned in exact integer arithmetic (a problem with c/n = 0.3 falls in (0.2,0.3]).
    """
    n_arr, c_arr = (np.atleast_1d(_as_counts(x, name)) for x, name in ((n, "n"), (c, "c")))
    if np.any(n_arr < 1) or np.any(c_arr < 0) or np.any(c_arr > n_arr):
        raise RlboundError("accuracy histogram: every problem needs n >= 1 and 0 <= c <= n")
    idx = -((-10 * c_arr) // n_arr)  # ceil(10 c / n): 1..10 for 0 < c < n
    idx = np.where(c_arr == 0, 0, np.where(c_arr == n_arr, 11, idx))
    return np.bincount(idx, minlength=12)


