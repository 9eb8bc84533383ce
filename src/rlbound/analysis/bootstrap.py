"""Percentile bootstrap over problems, vectorised.

Every confidence band in rlbound resamples *problems* with replacement (samples within a problem
are not resampled: their uncertainty is already inside the unbiased per-problem estimate). A
replicate is a vector of integer weights (how often each problem was drawn); the replicate mean of
a per-problem matrix is then one matrix product, so a 1000-replicate band over 500 problems × 1024
values of k costs one BLAS call per block of replicates instead of a Python loop.

:func:`bootstrap_means` takes several per-problem matrices that share their rows (problems) and
resamples them *together*, which is what a paired comparison (base vs RL on the same problems)
needs. :func:`percentile_interval` turns replicates into a (lo, hi) band.

What it does not do: no BCa or studentised intervals, no resampling of samples within a problem,
no clustering (problems are assumed exchangeable).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rlbound.errors import RlboundError

# Upper bound on the elements of one block's weight matrix (replicates × problems).
_BLOCK_ELEMENTS = 2_000_000


def check_bootstrap_args(n_boot: int, ci: float) -> None:
    """Refuse a negative replicate count or a confidence level outside (0, 1)."""
    if int(n_boot) != n_boot or n_boot < 0:
        raise RlboundError(f"bootstrap: n_boot must be a whole number >= 0, got {n_boot!r}")
    if not 0.0 < float(ci) < 1.0:
        raise RlboundError(f"bootstrap: ci must be between 0 and 1 (e.g. 0.95), got {ci!r}")


def resample_weights(n_items: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n_items)`` integer weights: row b counts how often each item was drawn.

    Each row sums to ``n_items`` (a resample of the same size, with replacement).
    """
    idx = rng.integers(0, n_items, size=(n_boot, n_items))
    idx += (np.arange(n_boot) * n_items)[:, None]
    counts = np.bincount(idx.ravel(), minlength=n_boot * n_items)
    return counts.reshape(n_boot, n_items)


def bootstrap_means(
    matrices: Sequence[np.ndarray], n_boot: int, seed: int = 0
) -> list[np.ndarray]:
    """Replicate means over rows for each ``(P, K_i)`` (or ``(P,)``) matrix, resampled jointly.

    All matrices must have the same number of rows P (the same problems, in the same order); each
    replicate draws one set of problems and applies it to every matrix (paired bootstrap).
    Returns one ``(n_boot, K_i)`` (or ``(n_boot,)``) array per matrix. Deterministic in ``seed``.
    """
    mats = [np.asarray(m, dtype=np.float64) for m in matrices]
    if not mats:
        return []
    p = mats[0].shape[0]
    if p == 0:
        raise RlboundError("bootstrap: no problems to resample")
    if any(m.shape[0] != p for m in mats):
        raise ValueError("bootstrap_means: matrices must share their rows (problems)")
    flat = [m.reshape(p, -1) for m in mats]
    outs = [np.empty((n_boot, m.shape[1])) for m in flat]
    rng = np.random.default_rng(seed)
    block = max(1, min(n_boot, _BLOCK_ELEMENTS // p)) if n_boot else 0
    start = 0
    while start < n_boot:
        b = min(block, n_boot - start)
        w = resample_weights(p, b, rng).astype(np.float64)
        for m, out in zip(flat, outs):
            # integer weights times values, divided once: a constant column stays exactly constant
            np.divide(w @ m, p, out=out[start : start + b])
        start += b
    return [o.reshape((n_boot,) + m.shape[1:]) for o, m in zip(outs, mats)]


def percentile_interval(replicates: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """The percentile band ``(lo, hi)`` at level ``ci`` over axis 0 of ``replicates``.

    With no replicates (``n_boot=0``) the band is NaN (no interval was asked for).
    """
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.shape[0] == 0:
        nan = np.full(reps.shape[1:], np.nan)
        return nan, nan.copy()
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha], axis=0)
    return lo, hi
