"""Entropy of a run's samples: how spread its answers are, and how uncertain its tokens were.

RL on verifiable rewards is reported to collapse diversity (Yue et al. 2025, "Does Reinforcement
Learning Really Incentivize Reasoning Capacity in LLMs Beyond the Base Model?"; Cui et al. 2025,
"The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models"). Two measures:

- :func:`answer_entropy` — per problem, H = −Σ_j p_j ln p_j (nats) over the distinct extracted
  answer strings, p_j = share of the problem's samples giving answer j. Every None (nothing
  extracted / unparsable) falls into one "NA" bucket, which counts as an answer of its own. Then
  the plain mean over problems, with a percentile bootstrap band over problems.
- :func:`token_entropy` — from ``RunSamples.entropy_means`` (per sample: the mean over generated
  tokens of the full-vocabulary entropy, computed by the engine). Averaging, exactly: per problem,
  the mean over its samples whose value is finite (NaN = engine could not compute it, excluded
  and counted); then the unweighted mean over problems having at least one finite value (problems
  with none are excluded and counted), with a bootstrap band over those problems. So every problem
  weighs the same whatever its number of samples or tokens. When no value is available at all
  the result says so (``available=False``, mean NaN) instead of raising.
- :func:`match_temperature` — given a model's token entropy measured at a few temperatures and a
  target entropy (another model's), the temperature at which the first reaches the target, by
  monotone piecewise-linear interpolation; "not bracketed" when the target is outside the
  measured range. Which entropy is measured is the caller's choice (``rlbound.temperature_match``
  uses the entropy of the tempered sampling distribution).

What it does not do: no I/O, no plotting; it does not compute token entropies from logits (the
engine does), does not canonicalise answers (the verifier/extractor does: "1/2" and "0.5" are two
answers here), and does not use a bias-corrected entropy estimator (the plug-in estimator is
biased low for few samples; compare runs at equal n).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlbound.analysis.bootstrap import bootstrap_means, check_bootstrap_args, percentile_interval
from rlbound.analysis.samples import RunSamples, json_float
from rlbound.errors import RlboundError

NA_BUCKET = "NA"


def _answer_key(a: str | None) -> tuple[int, str]:
    # a tuple key keeps a real answer spelled "NA" apart from the None bucket
    return (0, NA_BUCKET) if a is None else (1, str(a))


def entropy_of_answers(answers: Sequence[str | None]) -> float:
    """Plug-in entropy (nats) of one problem's answers; None values share one "NA" bucket."""
    if len(answers) == 0:
        raise RlboundError("answer entropy: a problem has no samples")
    counts = np.array(list(Counter(_answer_key(a) for a in answers).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(max(0.0, -np.sum(p * np.log(p))))


def _band(values: np.ndarray, n_boot: int, ci: float, seed: int) -> tuple[float, float]:
    (reps,) = bootstrap_means([values], n_boot, seed)
    lo, hi = percentile_interval(reps, ci)
    return float(lo), float(hi)


@dataclass
class AnswerEntropy:
    """Answer entropy (nats) per problem and its mean over problems with a bootstrap band."""

    label: str
    per_problem: np.ndarray
    problem_ids: list[str]
    mean: float
    lo: float
    hi: float
    ci: float
    n_boot: int

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "unit": "nats", "n_problems": len(self.problem_ids),
                "mean": json_float(self.mean), "lo": json_float(self.lo), "hi": json_float(self.hi),
                "ci": self.ci, "n_boot": self.n_boot}


def answer_entropy(
    answers_by_problem: Sequence[Sequence[str | None]], *, problem_ids: Sequence[Any] | None = None,
    label: str = "", n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
) -> AnswerEntropy:
    """Per-problem −Σ p_j ln p_j over distinct answers (None → one "NA" bucket); mean over problems."""
    check_bootstrap_args(n_boot, ci)
    ids = [str(p) for p in problem_ids] if problem_ids is not None else [str(i) for i in range(len(answers_by_problem))]
    if len(ids) != len(answers_by_problem):
        raise RlboundError("answer entropy: problem ids and answers cover different numbers of problems")
    if not ids:
        raise RlboundError(f"answer entropy: run {label!r} has no problems")
    per = np.empty(len(ids))
    for i, ans in enumerate(answers_by_problem):
        if len(ans) == 0:
            raise RlboundError(f"answer entropy: problem {ids[i]!r} of run {label!r} has no samples")
        per[i] = entropy_of_answers(ans)
    lo, hi = _band(per, n_boot, ci, seed)
    return AnswerEntropy(label, per, ids, float(per.mean()), lo, hi, ci, int(n_boot))


def answer_entropy_run(run: RunSamples, **kwargs: Any) -> AnswerEntropy:
    """:func:`answer_entropy` over one :class:`RunSamples` (its answers, ids and label)."""
    return answer_entropy(run.answers, problem_ids=run.problem_ids, label=run.label, **kwargs)


@dataclass
class TokenEntropy:
    """Mean token entropy (nats): per-problem mean of finite per-sample values, then mean over problems.

    ``per_problem`` is NaN for problems with no finite value. ``available`` is False when no sample
    has a value (then mean/lo/hi are NaN and ``note`` says why). ``method`` is how the engine
    computed each token's entropy (:func:`token_entropy_method`): ``"full vocabulary"``, or
    ``"top-K"`` for engines that only see the K most likely tokens (vLLM, servers), where the
    remaining mass counts as one bucket and the value is a lower bound of the full entropy.
    """

    label: str
    available: bool
    mean: float
    lo: float
    hi: float
    per_problem: np.ndarray
    problem_ids: list[str]
    n_samples: int
    n_samples_missing: int
    n_problems_used: int
    n_problems_missing: int
    ci: float
    n_boot: int
    note: str = ""
    method: str = "full vocabulary"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "unit": "nats", "available": self.available, "method": self.method,
                "mean": json_float(self.mean), "lo": json_float(self.lo), "hi": json_float(self.hi),
                "n_samples": self.n_samples, "n_samples_missing": self.n_samples_missing,
                "n_problems_used": self.n_problems_used, "n_problems_missing": self.n_problems_missing,
                "averaging": "per problem: mean over samples with a value; then mean over problems",
                "ci": self.ci, "n_boot": self.n_boot, "note": self.note}


def token_entropy_method(meta: dict[str, Any] | None) -> str:
    """How a run's engine computed token entropies, from run.json's ``engine_details``.

    An engine that computes them from its top-K log-probabilities records
    ``"token_entropy": {"method": "top-k", "k": K}``; anything else is the full vocabulary.
    """
    recorded = ((meta or {}).get("engine_details") or {}).get("token_entropy")
    if isinstance(recorded, dict) and recorded.get("method") == "top-k":
        return f"top-{recorded.get('k', '?')}"
    return "full vocabulary"


def token_entropy(run: RunSamples, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> TokenEntropy:
    """Mean over problems of the per-problem mean of ``run.entropy_means`` (NaNs excluded, counted)."""
    check_bootstrap_args(n_boot, ci)
    method = token_entropy_method(run.meta)
    ids = [str(p) for p in run.problem_ids]
    n_total = int(sum(len(c) for c in run.correct))
    nan = float("nan")
    if not run.entropy_means:
        return TokenEntropy(run.label, False, nan, nan, nan, np.full(len(ids), nan), ids, n_total, n_total,
                            0, len(ids), ci, int(n_boot), "no token entropies recorded for this run", method)
    if len(run.entropy_means) != len(ids):
        raise RlboundError(f"token entropy: run {run.label!r} has entropies for {len(run.entropy_means)} "
                           f"problems but {len(ids)} problems")
    per = np.full(len(ids), nan)
    n_samples = n_missing = 0
    for i, ent in enumerate(run.entropy_means):
        v = np.asarray(ent, dtype=np.float64).reshape(-1)
        ok = np.isfinite(v)
        n_samples += v.size
        n_missing += int(v.size - ok.sum())
        if ok.any():
            per[i] = float(v[ok].mean())
    used = np.isfinite(per)
    n_used = int(used.sum())
    if n_used == 0:
        return TokenEntropy(run.label, False, nan, nan, nan, per, ids, n_samples, n_missing, 0, len(ids), ci,
                            int(n_boot), "the engine could not compute token entropy for any sample", method)
    vals = per[used]
    lo, hi = _band(vals, n_boot, ci, seed)
    note = ""
    if n_missing:
        note = f"{n_missing} of {n_samples} samples had no token entropy and were excluded"
    return TokenEntropy(run.label, True, float(vals.mean()), lo, hi, per, ids, n_samples, n_missing, n_used,
                        len(ids) - n_used, ci, int(n_boot), note, method)


# --------------------------------------------------------------------------- temperature matching


@dataclass
class TemperatureMatch:
    """The temperature at which a model's token entropy reaches ``target`` (see :func:`match_temperature`).

    ``temperatures`` ascend; ``entropies`` are the measured values there and ``fitted`` their
    non-decreasing (isotonic) fit, which equals ``entropies`` when ``monotone``. ``temperature`` is
    None when the target is outside the fitted range (``bracketed`` False; ``side`` is "below"
    when even the lowest temperature gives more entropy than the target, "above" when even the
    highest gives less).
    """

    target: float
    temperatures: np.ndarray
    entropies: np.ndarray
    fitted: np.ndarray
    temperature: float | None
    bracketed: bool
    monotone: bool
    side: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"target_entropy": json_float(self.target), "temperature": json_float(self.temperature),
                "bracketed": self.bracketed, "side": self.side, "monotone": self.monotone,
                "points": [{"temperature": float(t), "entropy": json_float(e), "fitted": json_float(f)}
                           for t, e, f in zip(self.temperatures, self.entropies, self.fitted)],
                "method": "piecewise-linear interpolation of the non-decreasing (isotonic) fit of "
                          "entropy against temperature; the lowest temperature reaching the target",
                "note": self.note}


def _isotonic_increasing(y: np.ndarray) -> np.ndarray:
    """Least-squares non-decreasing fit of ``y`` (pool adjacent violators, equal weights)."""
    blocks: list[list[float]] = []  # [sum, count]
    for v in y:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    return np.concatenate([np.full(int(c), s / c) for s, c in blocks])


def match_temperature(
    temperatures: Sequence[float], entropies: Sequence[float], target: float
) -> TemperatureMatch:
    """The temperature at which token entropy, measured at ``temperatures``, reaches ``target``.

    Entropy is taken to rise with temperature (the entropy of softmax(z/T) never decreases in T).
    Points are sorted by temperature; where the measurements dip (sampling noise) they are
    replaced by their isotonic fit, and the note says so. The answer is the lowest temperature at
    which the piecewise-linear fit reaches ``target``; outside the fitted range there is no
    answer (``bracketed`` False) rather than an extrapolation.
    """
    t = np.asarray(temperatures, dtype=np.float64).reshape(-1)
    e = np.asarray(entropies, dtype=np.float64).reshape(-1)
    if t.size != e.size:
        raise RlboundError(f"temperature match: {t.size} temperatures but {e.size} entropies")
    if t.size < 2:
        raise RlboundError("temperature match: give at least two temperatures")
    if not (np.all(np.isfinite(t)) and np.all(t > 0)):
        raise RlboundError("temperature match: temperatures must be finite and > 0")
    if not (np.all(np.isfinite(e)) and np.isfinite(target)):
        raise RlboundError("temperature match: every entropy and the target must be a finite number")
    order = np.argsort(t, kind="stable")
    t, e = t[order], e[order]
    if np.any(np.diff(t) == 0):
        raise RlboundError("temperature match: a temperature is given twice")
    fitted = _isotonic_increasing(e)
    monotone = bool(np.all(np.diff(e) >= 0))
    note = "" if monotone else ("measured entropy does not rise at every step (sampling noise?); "
                                "matched on its non-decreasing fit")
    if target < fitted[0] or target > fitted[-1]:
        side = "below" if target < fitted[0] else "above"
        hint = (f"the lowest temperature ({t[0]:g}) already gives more entropy; try lower ones"
                if side == "below" else f"the highest temperature ({t[-1]:g}) gives less entropy; try higher ones")
        note = "; ".join(x for x in (f"target not bracketed: {hint}", note) if x)
        return TemperatureMatch(float(target), t, e, fitted, None, False, monotone, side, note)
    i = int(np.argmax(fitted >= target))  # first point at or above the target
    if i == 0 or fitted[i] == target:
        match = float(t[i])
    else:
        lo_f, hi_f = fitted[i - 1], fitted[i]
        match = float(t[i - 1] + (target - lo_f) / (hi_f - lo_f) * (t[i] - t[i - 1]))
    return TemperatureMatch(float(target), t, e, fitted, match, True, monotone, "", note)
