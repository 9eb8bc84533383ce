"""SimpleQA's summary numbers for a factual-QA run: correct, incorrect, not attempted, F-score.

SimpleQA (Wei et al. 2024) grades each answer CORRECT, INCORRECT or NOT_ATTEMPTED and reports
five numbers; :func:`qa_metrics` computes them from a run graded by the ``qa`` or ``qa-judge``
verifier (:data:`QA_VERIFIERS`), with k samples per problem:

* per problem, the fractions of its samples that are correct, not attempted (status
  ``not_attempted``, or ``no_answer``: nothing was extracted, so nothing was attempted) and
  incorrect (the rest: wrong attempts, and checks that failed, whose count is in
  ``failed_checks``); each overall number is the mean over problems (with one sample per problem,
  SimpleQA's own definition; "correct" is then pass@1);
* correct given attempted = correct / (correct + incorrect);
* F-score = the harmonic mean of correct and correct given attempted (:func:`f_score`, the one
  place the formula lives).

Each number has a percentile bootstrap interval over problems (:mod:`rlbound.analysis.bootstrap`,
problems resampled together for all five, the ratios recomputed per replicate).

What it does not do: no I/O; it does not regrade (the verdicts and statuses are the run's), and it
does not weight problems by their sample counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from rlbound.analysis.bootstrap import bootstrap_means, check_bootstrap_args, percentile_interval
from rlbound.analysis.samples import RunSamples, json_float
from rlbound.errors import RlboundError

__all__ = ["NOT_ATTEMPTED_STATUSES", "QA_VERIFIERS", "QAMetrics", "Rate", "correct_given_attempted", "f_score",
           "is_qa_run", "qa_metrics"]

QA_VERIFIERS = ("qa", "qa-judge")
#: Statuses that count as "not attempted": the verifier's ``not_attempted`` and the pool's
#: ``no_answer`` (an empty or unreadable completion).
NOT_ATTEMPTED_STATUSES = ("not_attempted", "no_answer")
#: Statuses of checks that did not grade the answer (they count as incorrect, and are counted).
FAILED_STATUSES = ("error", "timeout")


def correct_given_attempted(correct: Any, incorrect: Any) -> Any:
    """correct / (correct + incorrect); NaN where nothing was attempted. Floats or arrays."""
    c, i = np.asarray(correct, dtype=np.float64), np.asarray(incorrect, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(c + i > 0, c / (c + i), np.nan)
    return float(out) if out.ndim == 0 else out


def f_score(correct: Any, given_attempted: Any) -> Any:
    """SimpleQA's F-score: the harmonic mean of correct and correct-given-attempted (0 where both
    are 0, NaN where correct-given-attempted is undefined). Floats or arrays."""
    c, g = np.asarray(correct, dtype=np.float64), np.asarray(given_attempted, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(c + g > 0, 2.0 * c * g / (c + g), 0.0)
    out = np.where(np.isfinite(g), out, np.nan)
    return float(out) if out.ndim == 0 else out


@dataclass
class Rate:
    """One number with its percentile bootstrap interval (NaN bounds without bootstrap)."""

    mean: float
    lo: float
    hi: float

    def to_dict(self) -> dict[str, Any]:
        return {"mean": json_float(self.mean), "lo": json_float(self.lo), "hi": json_float(self.hi)}


@dataclass
class QAMetrics:
    """SimpleQA's numbers for one run; see the module docstring for the definitions."""

    label: str
    n_problems: int
    n_samples: int
    correct: Rate
    incorrect: Rate
    not_attempted: Rate
    correct_given_attempted: Rate
    f_score: Rate
    failed_checks: int
    """Samples whose check failed (status error or timeout: e.g. a judge reply that was no
    verdict); they count as incorrect."""
    ci: float
    n_boot: int
    statuses: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "n_problems": self.n_problems, "n_samples": self.n_samples,
            "correct": self.correct.to_dict(), "incorrect": self.incorrect.to_dict(),
            "not_attempted": self.not_attempted.to_dict(),
            "correct_given_attempted": self.correct_given_attempted.to_dict(),
            "f_score": self.f_score.to_dict(), "failed_checks": self.failed_checks,
            "statuses": dict(self.statuses), "ci": self.ci, "n_boot": self.n_boot,
            "definition": "per-problem fractions averaged over problems; not attempted = statuses "
                          "not_attempted and no_answer; correct given attempted = correct / (correct + "
                          "incorrect); F-score = harmonic mean of correct and correct given attempted",
        }


def is_qa_run(meta: Mapping[str, Any] | None) -> bool:
    """Whether run.json ``meta`` says the run was graded by a QA verifier."""
    config = (meta or {}).get("config") or {}
    spec = config.get("verifier") if isinstance(config, Mapping) else None
    return isinstance(spec, Mapping) and spec.get("name") in QA_VERIFIERS


def _interval(reps: np.ndarray, ci: float) -> tuple[float, float]:
    finite = reps[np.isfinite(reps)]
    lo, hi = percentile_interval(finite, ci) if finite.size else (np.nan, np.nan)
    return float(lo), float(hi)


def qa_metrics(run: RunSamples, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> QAMetrics:
    """SimpleQA's numbers for ``run`` (which needs per-sample statuses), with bootstrap intervals."""
    check_bootstrap_args(n_boot, ci)
    if len(run.statuses) != len(run.problem_ids) or not run.problem_ids:
        raise RlboundError(f"run {run.label!r}: SimpleQA's numbers need per-sample verifier statuses")
    n = run.n
    if n.min() < 1:
        raise RlboundError(f"run {run.label!r}: problem {run.problem_ids[int(np.argmin(n))]!r} has no samples")
    correct = run.c / n
    skipped = np.array([sum(s in NOT_ATTEMPTED_STATUSES for s in statuses) for statuses in run.statuses]) / n
    incorrect = np.clip(1.0 - correct - skipped, 0.0, 1.0)
    c, i, s = float(correct.mean()), float(incorrect.mean()), float(skipped.mean())
    cga = correct_given_attempted(c, i)
    reps_c, reps_i, reps_s = bootstrap_means([correct, incorrect, skipped], n_boot, seed)
    reps_cga = correct_given_attempted(reps_c, reps_i)
    reps_f = f_score(reps_c, reps_cga)
    counts: dict[str, int] = {}
    for statuses in run.statuses:
        for status in statuses:
            counts[status] = counts.get(status, 0) + 1
    return QAMetrics(
        run.label, len(run.problem_ids), int(n.sum()),
        Rate(c, *_interval(reps_c, ci)), Rate(i, *_interval(reps_i, ci)), Rate(s, *_interval(reps_s, ci)),
        Rate(cga, *_interval(reps_cga, ci)), Rate(f_score(c, cga), *_interval(reps_f, ci)),
        sum(counts.get(k, 0) for k in FAILED_STATUSES), float(ci), int(n_boot), counts,
    )
