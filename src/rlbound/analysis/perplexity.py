"""Perplexity of one run's completions under a scoring model, and a summary of its distribution.

PPL_M(Y | x) = exp(−(1/T) Σ_t log P_M(y_t | x, y_<t)) over the T scored completion tokens: how
surprised model M is by a completion. Scoring an RL model's samples under its base model (or a
teacher's under the RL model) tells whether those samples lie where the other model already
puts its mass (Yue et al. 2025, "Does Reinforcement Learning Really Incentivize Reasoning Capacity
in LLMs Beyond the Base Model?", Fig. 6).

- :func:`perplexity` — the formula, once, from a completion's per-token log-probabilities.
- :class:`SampleScores` — one run's samples as scored by one model (what ``rlbound score`` stores
  in ``RUN/scores/<label>.parquet``; the store groups it per problem).
- :func:`perplexity_summary` — the distribution of log PPL over samples (mean, median, quantiles)
  and, as the headline number, the mean over problems of each problem's mean log PPL, with a
  percentile bootstrap interval over problems; its exponential is a geometric-mean PPL.

Averaging, exactly: log PPL of a sample = −(mean token log-probability). Per problem, the mean
over its samples with at least one scored token; then the unweighted mean over problems (every
problem weighs the same whatever its number of samples or tokens). Samples with no scored token
(an empty completion) have no perplexity: they are excluded and counted.

What it does not do: no I/O and no model calls (``rlbound.scoring`` runs the scorer); it does not
add an end-of-sequence token to what was scored (the engines' ``score`` covers the completion's
text tokens only), and it does not compare tokenizers: PPLs of two scorers with different
tokenizers are per *their* tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from rlbound.analysis.bootstrap import bootstrap_means, check_bootstrap_args, percentile_interval
from rlbound.analysis.samples import json_float
from rlbound.errors import RlboundError

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
"""Quantiles of the per-sample PPL reported by :func:`perplexity_summary`."""


def perplexity(token_logprobs: Sequence[float]) -> float:
    """exp(−mean of ``token_logprobs``) (natural logs); NaN for an empty sequence, inf on overflow."""
    lps = np.asarray(token_logprobs, dtype=np.float64).reshape(-1)
    if lps.size == 0:
        return float("nan")
    with np.errstate(over="ignore"):
        return float(np.exp(-lps.mean()))


@dataclass
class SampleScores:
    """One run's samples scored by one model, grouped per problem (sample-index order).

    ``mean_logprobs[i][j]`` is the mean token log-probability of problem ``problem_ids[i]``'s
    j-th stored sample under the scorer (NaN when it had no token), ``n_tokens[i][j]`` the number
    of tokens scored, ``sample_idx[i][j]`` its sample index. ``scorer`` is the score file's json
    (the scorer's identity); ``run_label`` the label of the scored run.
    """

    run_label: str
    scorer_label: str
    problem_ids: list[str]
    mean_logprobs: list[np.ndarray]
    n_tokens: list[np.ndarray]
    sample_idx: list[np.ndarray] = field(default_factory=list)
    scorer: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.problem_ids)


@dataclass
class PerplexitySummary:
    """The distribution of PPL of one run's samples under one scorer.

    ``mean_log_ppl`` (with its bootstrap band ``lo``, ``hi``) is the mean over problems of the
    per-problem mean log PPL; ``geo_mean_ppl`` = exp(``mean_log_ppl``). ``mean_ppl``,
    ``median_ppl`` and ``quantiles`` are over samples. ``log_ppl`` holds every sample's finite
    log PPL (for plots); ``per_problem`` the per-problem means (NaN where a problem had none).
    """

    run_label: str
    scorer_label: str
    n_problems: int
    n_problems_missing: int
    n_samples: int
    n_samples_missing: int
    mean_log_ppl: float
    lo: float
    hi: float
    mean_ppl: float
    median_ppl: float
    quantiles: dict[float, float]
    log_ppl: np.ndarray
    per_problem: np.ndarray
    problem_ids: list[str]
    ci: float
    n_boot: int
    scorer: dict[str, Any] = field(default_factory=dict)

    @property
    def geo_mean_ppl(self) -> float:
        return float(np.exp(self.mean_log_ppl))

    def to_dict(self) -> dict[str, Any]:
        exp = lambda x: json_float(float(np.exp(x))) if np.isfinite(x) else None  # noqa: E731
        return {
            "run": self.run_label, "scorer": self.scorer_label,
            "scorer_identity": self.scorer.get("identity"),
            "n_problems": self.n_problems, "n_problems_missing": self.n_problems_missing,
            "n_samples": self.n_samples, "n_samples_missing": self.n_samples_missing,
            "mean_log_ppl": {"mean": json_float(self.mean_log_ppl), "lo": json_float(self.lo),
                             "hi": json_float(self.hi)},
            "geo_mean_ppl": {"mean": exp(self.mean_log_ppl), "lo": exp(self.lo), "hi": exp(self.hi)},
            "mean_ppl": json_float(self.mean_ppl), "median_ppl": json_float(self.median_ppl),
            "ppl_quantiles": {f"{q:g}": json_float(v) for q, v in self.quantiles.items()},
            "averaging": "log PPL = -mean token log-prob per sample; per problem: mean over samples "
                         "with tokens; then mean over problems (bootstrap over problems)",
            "ci": self.ci, "n_boot": self.n_boot,
        }


def perplexity_summary(
    scores: SampleScores, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> PerplexitySummary:
    """Summarise ``scores`` (see the module docstring for the averaging)."""
    check_bootstrap_args(n_boot, ci)
    ids = [str(p) for p in scores.problem_ids]
    if len(scores.mean_logprobs) != len(ids):
        raise RlboundError(f"perplexity: scores of run {scores.run_label!r} cover {len(scores.mean_logprobs)} "
                           f"problems but list {len(ids)} problem ids")
    if not ids:
        raise RlboundError(f"perplexity: no scored samples for run {scores.run_label!r} "
                           f"under {scores.scorer_label!r}")
    per = np.full(len(ids), np.nan)
    finite_all: list[np.ndarray] = []
    n_samples = n_missing = 0
    for i, m in enumerate(scores.mean_logprobs):
        log_ppl = -np.asarray(m, dtype=np.float64).reshape(-1)
        ok = np.isfinite(log_ppl)
        n_samples += log_ppl.size
        n_missing += int(log_ppl.size - ok.sum())
        if ok.any():
            per[i] = float(log_ppl[ok].mean())
            finite_all.append(log_ppl[ok])
    used = np.isfinite(per)
    if not used.any():
        raise RlboundError(f"perplexity: no sample of run {scores.run_label!r} has a scored token "
                           f"under {scores.scorer_label!r}")
    vals = per[used]
    (reps,) = bootstrap_means([vals], int(n_boot), seed)
    lo, hi = percentile_interval(reps, ci)
    log_ppl_all = np.concatenate(finite_all)
    with np.errstate(over="ignore"):
        ppl = np.exp(log_ppl_all)
    qs = np.quantile(ppl, QUANTILES)
    return PerplexitySummary(
        run_label=scores.run_label, scorer_label=scores.scorer_label,
        n_problems=int(used.sum()), n_problems_missing=int((~used).sum()),
        n_samples=n_samples, n_samples_missing=n_missing,
        mean_log_ppl=float(vals.mean()), lo=float(lo), hi=float(hi),
        mean_ppl=float(ppl.mean()), median_ppl=float(np.median(ppl)),
        quantiles={q: float(v) for q, v in zip(QUANTILES, qs)},
        log_ppl=log_ppl_all, per_problem=per, problem_ids=ids, ci=float(ci), n_boot=int(n_boot),
        scorer=dict(scores.scorer),
    )
