"""Answer agreement: how often two samples of one problem give the same final answer.

maj@k (``rlbound.analysis.passk``) asks whether a problem's most frequent answer is correct. That
is the right question when a problem has one correct answer. When it has many (countdown: every
expression that reaches the target with the given numbers), correct samples spread over many
distinct answers while a wrong one can pile up, so the vote mostly measures how the answers
split: the lab's countdown gave maj@256 = 0 where pass@1 was not 0. What voting relies on
is agreement between samples, and that can be measured directly, for any task:

- **agreement** per problem: the probability that two of its samples, drawn without
  replacement, give the same answer: Σ_j c_j (c_j − 1) / (n (n − 1)) over the distinct answer
  keys j (c_j samples each, n samples in all). It is the unbiased estimate of Σ_j p_j² (the
  collision probability; −ln of it is the Rényi-2 answer entropy), where the plug-in Σ (c_j/n)²
  is biased upwards by about 1/n. Samples without an extracted answer agree with nothing;
- **correct agreement**: the probability that the two samples give the same *correct* answer,
  Σ_j c⁺_j (c⁺_j − 1) / (n (n − 1)) with c⁺_j the correct samples of key j. Sharpening (RL) raises
  it; a model that solves a problem in many different ways keeps it low at the same pass@1.

Both are averaged over problems, with percentile bootstrap bands over problems (one resample
for both). The answer key is the one :mod:`rlbound.analysis.solutions` uses: countdown answers by
their normal form (``3*4+5`` and ``5+4*3`` agree), other tasks by the whitespace-normalised
answer. :func:`has_many_correct_answers` says, from the runs' ``run.json``, when the report shows
agreement in place of maj@k (the countdown verifier's tasks).

What it does not do: no I/O; it does not pick k (agreement uses all of a problem's samples and
does not grow with k as maj@k does); no semantic equivalence beyond the key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlbound.analysis.bootstrap import bootstrap_means, check_bootstrap_args, percentile_interval
from rlbound.analysis.samples import RunSamples, json_float
from rlbound.analysis.solutions import KEY_DEFINITIONS, solution_key, solution_key_kind
from rlbound.errors import RlboundError

__all__ = ["AnswerAgreement", "agreement_of_answers", "answer_agreement_run", "has_many_correct_answers"]

DEFINITION = ("probability that two of a problem's samples, drawn without replacement, give the same answer "
              "(sum over distinct answers of c(c-1) / (n(n-1)); unanswered samples agree with nothing); "
              "correct: the same correct answer; means over problems")


def has_many_correct_answers(*metas: Mapping[str, Any] | None) -> bool:
    """True when the runs' task has many correct answers per problem (the lab's countdown, graded by
    the ``countdown`` verifier), where maj@k says little and answer agreement replaces it."""
    return solution_key_kind(*metas) == "countdown"


def agreement_of_answers(answers, correct, key=lambda a: a) -> tuple[float, float]:
    """(agreement, correct agreement) of one problem's samples; ``key`` maps an answer to its key."""
    n = len(answers)
    if n != len(correct):
        raise RlboundError(f"agreement: {n} answers but {len(correct)} verdicts")
    if n < 2:
        raise RlboundError(f"agreement: needs at least 2 samples per problem, got {n}")
    every: Counter = Counter()
    right: Counter = Counter()
    for answer, ok in zip(answers, correct):
        if answer is None:
            continue
        k = key(answer)
        every[k] += 1
        if ok:
            right[k] += 1
    pairs = n * (n - 1)
    return (sum(c * (c - 1) for c in every.values()) / pairs, sum(c * (c - 1) for c in right.values()) / pairs)


@dataclass
class AnswerAgreement:
    """Answer agreement of one run: per problem and its mean with a bootstrap band; the same for
    correct agreement (``*_correct``)."""

    label: str
    key_kind: str
    problem_ids: list[str]
    per_problem: np.ndarray
    per_problem_correct: np.ndarray
    mean: float
    lo: float
    hi: float
    mean_correct: float
    lo_correct: float
    hi_correct: float
    ci: float
    n_boot: int

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "n_problems": len(self.problem_ids), "key": self.key_kind,
                "key_definition": KEY_DEFINITIONS[self.key_kind], "definition": DEFINITION,
                "agreement": {"mean": json_float(self.mean), "lo": json_float(self.lo), "hi": json_float(self.hi)},
                "correct_agreement": {"mean": json_float(self.mean_correct), "lo": json_float(self.lo_correct),
                                      "hi": json_float(self.hi_correct)},
                "ci": self.ci, "n_boot": self.n_boot}


def answer_agreement_run(run: RunSamples, key_kind: str | None = None, *, n_boot: int = 1000,
                         ci: float = 0.95, seed: int = 0) -> AnswerAgreement:
    """Agreement and correct agreement of ``run`` (key from its run.json unless ``key_kind`` is given)."""
    check_bootstrap_args(n_boot, ci)
    if not run.answers or len(run.answers) != len(run.problem_ids):
        raise RlboundError(f"agreement: run {run.label!r} has no extracted answers recorded")
    if not run.problem_ids:
        raise RlboundError(f"agreement: run {run.label!r} has no problems")
    kind = key_kind or solution_key_kind(run.meta)
    key_fn = solution_key(kind)
    cache: dict[str, str] = {}

    def key(answer: str) -> str:
        if answer not in cache:
            cache[answer] = key_fn(answer)
        return cache[answer]

    per = np.empty((len(run.problem_ids), 2))
    for i, (answers, correct) in enumerate(zip(run.answers, run.correct)):
        try:
            per[i] = agreement_of_answers(answers, np.asarray(correct), key)
        except RlboundError as exc:
            raise RlboundError(f"{exc} (run {run.label!r}, problem {run.problem_ids[i]!r})") from None
    (reps,) = bootstrap_means([per], n_boot, seed)
    lo, hi = percentile_interval(reps, ci)
    mean = per.mean(axis=0)
    return AnswerAgreement(run.label, kind, [str(p) for p in run.problem_ids], per[:, 0], per[:, 1],
                           float(mean[0]), float(lo[0]), float(hi[0]), float(mean[1]), float(lo[1]), float(hi[1]),
                           ci, int(n_boot))
