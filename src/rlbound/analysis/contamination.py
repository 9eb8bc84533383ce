"""Contamination probe: can the model finish a problem's text from its beginning?

A model that saw a benchmark in training can often continue a truncated problem statement word
for word (Wu et al. 2025, *Reasoning or Memorization?*, probe Qwen2.5 on MATH-500 this way). The
probe gives the model the first x % of each problem's text and compares its greedy continuation
with the rest of the text; it also grades that same continuation's answer with the task's
verifier (a model that reaches the right answer from 40 % of the question has memorised it).

Definitions (the one implementation of each):

* **Split by words**: the text's whitespace-separated words; the prompt is the original text up
  to the end of word ``floor(W · x / 100)`` (at least 1, at most W − 1), the rest is everything
  after it. Words, not characters, so a cut never falls inside a word or a number.
* **Comparison window**: the continuation's first R words, R = the number of words in the rest
  (a model may go on past the problem, e.g. into a solution; that is not held against it).
* **Exact match**: the window equals the rest, word for word (case-sensitive, whitespace
  normalised).
* **ROUGE-L F1** (Lin 2004, β = 1) over whitespace tokens: LCS = longest common subsequence of the
  two token lists, P = LCS / |candidate|, R = LCS / |reference|, F1 = 2PR / (P + R); 0 when either
  list is empty or nothing is shared.
* **Answer accuracy**: the share of problems whose continuation the verifier grades correct.

Intervals are percentile bootstrap intervals over problems (one resample for all three metrics).

What it does not do: no sampling or verification (``rlbound.probe`` runs the model and the
verifier and calls these functions), no tokenisation beyond whitespace, no stemming or
lower-casing (a memorised continuation reproduces the text exactly).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from rlbound.analysis.bootstrap import bootstrap_means, check_bootstrap_args, percentile_interval
from rlbound.analysis.samples import json_float
from rlbound.errors import RlboundError

DEFAULT_PERCENTS = (40, 60, 80)
"""Shares of each problem's words given to the model."""

_WORD = re.compile(r"\S+")


def split_prompt(text: str, percent: float) -> tuple[str, str]:
    """(prompt, rest): the text up to the end of word floor(W·percent/100) (clamped to 1…W−1), and after it.

    Raises :class:`RlboundError` when ``percent`` is not strictly between 0 and 100 or the text has
    fewer than two words (nothing to split).
    """
    if not 0 < float(percent) < 100:
        raise RlboundError(f"contamination probe: the prompt share must be between 0 and 100 %, got {percent}")
    words = list(_WORD.finditer(text))
    if len(words) < 2:
        raise RlboundError(f"contamination probe: a text of {len(words)} word(s) cannot be split")
    n_head = min(max(int(len(words) * float(percent) // 100), 1), len(words) - 1)
    return text[: words[n_head - 1].end()], text[words[n_head].start():]


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel, Hyyrö 2004)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l_f1(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of two texts over whitespace tokens (see the module docstring)."""
    cand, ref = candidate.split(), reference.split()
    lcs = lcs_length(cand, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def continuation_scores(continuation: str, rest: str) -> tuple[bool, float]:
    """(exact match, ROUGE-L F1) of a continuation's first |rest| words against ``rest``."""
    ref = rest.split()
    window = " ".join(continuation.split()[: len(ref)])
    return window.split() == ref, rouge_l_f1(window, rest)


@dataclass
class ProbeShare:
    """The probe's results at one prompt share: means over problems with bootstrap bands."""

    percent: float
    n_problems: int
    exact_match: tuple[float, float, float]
    rouge_l: tuple[float, float, float]
    answer_accuracy: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        def trio(t):
            return {"mean": json_float(t[0]), "lo": json_float(t[1]), "hi": json_float(t[2])}

        return {"percent": self.percent, "n_problems": self.n_problems, "exact_match": trio(self.exact_match),
                "rouge_l_f1": trio(self.rouge_l), "answer_accuracy": trio(self.answer_accuracy)}


def probe_summary(
    percent: float,
    exact: Sequence[bool],
    rouge: Sequence[float],
    correct: Sequence[bool],
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> ProbeShare:
    """Mean exact match, ROUGE-L F1 and answer accuracy over problems at one prompt share."""
    check_bootstrap_args(n_boot, ci)
    if not (len(exact) == len(rouge) == len(correct)):
        raise RlboundError("contamination probe: exact, rouge and correct must have one value per problem")
    if len(exact) == 0:
        raise RlboundError(f"contamination probe: no problems at {percent} %")
    matrix = np.column_stack([np.asarray(exact, dtype=np.float64), np.asarray(rouge, dtype=np.float64),
                              np.asarray(correct, dtype=np.float64)])
    (reps,) = bootstrap_means([matrix], n_boot, seed)
    lo, hi = percentile_interval(reps, ci)
    mean = matrix.mean(axis=0)
    trios = [(float(mean[j]), float(lo[j]), float(hi[j])) for j in range(3)]
    return ProbeShare(float(percent), int(matrix.shape[0]), *trios)
