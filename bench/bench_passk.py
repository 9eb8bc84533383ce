"""Benchmark (by hand, not part of the tests): pass@k curve with bands and the crossover at scale.

500 problems × n = 1024 samples (random c), 1000 bootstrap resamples each:

    python bench/bench_passk.py [--problems 500] [--n 1024] [--n-boot 1000]

Prints seconds for the estimator on every integer k, the curve with its band, and the paired
crossover with its bootstrap interval. It does not check numbers (the tests do).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rlbound.analysis.passk import crossover, pass_at_k, pass_at_k_curve


def _timed(label: str, fn):
    t0 = time.perf_counter()
    out = fn()
    print(f"{label:<58s} {time.perf_counter() - t0:8.3f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    p, n = args.problems, args.n
    n_arr = np.full(p, n)
    c_base = rng.binomial(n, rng.beta(0.3, 0.8, p))
    solvable = rng.random(p) < 0.7
    c_rl = rng.binomial(n, np.where(solvable, rng.beta(2.0, 1.0, p), 0.0))
    print(f"{p} problems x n={n}, n_boot={args.n_boot}")
    _timed(f"pass_at_k matrix, every k = 1..{n} ({p}x{n})", lambda: pass_at_k(n_arr, c_base, np.arange(1, n + 1)))
    cur = _timed("pass_at_k_curve (k = 1, 2, 4, ..., n) with band",
                 lambda: pass_at_k_curve((n_arr, c_base), n_boot=args.n_boot))
    print(f"    pass@1 {cur.mean[0]:.3f} [{cur.lo[0]:.3f}, {cur.hi[0]:.3f}]   "
          f"pass@{n} {cur.mean[-1]:.3f} [{cur.lo[-1]:.3f}, {cur.hi[-1]:.3f}]")
    x = _timed(f"crossover on every k = 1..{n}, paired bootstrap",
               lambda: crossover((n_arr, c_rl), (n_arr, c_base), n_boot=args.n_boot))
    print(f"    {x.statement()}")


if __name__ == "__main__":
    main()
