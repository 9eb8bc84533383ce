"""Reward functions on verdicts, by name: the true reward and the spurious ones.

A reward turns a batch of graded samples (:class:`RewardBatch`: problem ids, sample indices,
extracted answers, correctness and verifier statuses) into a float array, one value per sample.
They are pure: no verifier calls, no model, no I/O.

* ``correct``: 1 if the verifier said correct, else 0 (the RLVR reward).
* ``random``: Bernoulli(``p``), drawn from a hash of ``(seed, problem, sample, step)``, so a
  given sample's reward is reproducible and independent of the batch it is in (Shao et al. 2025,
  "Spurious Rewards: Rethinking Training Signals in RLVR").
* ``inverse``: 1 - correct (rewards wrong answers; a control).
* ``format_only``: 1 if an answer could be extracted (status other than ``no_answer``), whatever
  its correctness (Spurious Rewards' format reward).
* ``incorrect_label``: 1 if the answer equals a fixed *wrong* label of its problem, chosen by
  :func:`majority_wrong_labels` as the base model's most frequent wrong answer (Spurious Rewards'
  incorrect-label reward). Problems without a label get 0.

Answers are compared after whitespace normalisation; pass answers already normalised by the
verifier (``verifier.normalise``) for a finer match. One-shot RLVR (Wang et al. 2025) is a choice
of training set (one problem), not a reward: the loop handles it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from rlbound.errors import RlboundError
from rlbound.registry import Registry

NO_ANSWER = "no_answer"


@dataclass(frozen=True)
class RewardBatch:
    """One value per sample in each sequence (all of the same length)."""

    problem_ids: Sequence[str]
    sample_idx: Sequence[int]
    answers: Sequence[str | None]
    correct: Sequence[bool]
    statuses: Sequence[str]
    step: int = 0
    """Training step (only the random reward uses it, so each step draws afresh)."""

    def __post_init__(self) -> None:
        n = len(self.problem_ids)
        for name in ("sample_idx", "answers", "correct", "statuses"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"RewardBatch: {name} has {len(getattr(self, name))} entries, "
                                 f"problem_ids {n}")


RewardFn = Callable[[RewardBatch], np.ndarray]
REWARDS: Registry[Callable[..., RewardFn]] = Registry("reward")
"""Name -> factory: ``REWARDS.get(name)(**options)`` is a function of a :class:`RewardBatch`."""


def get_reward(name: str, **options) -> RewardFn:
    """The reward function ``name`` with its options (one-line RlboundError if unknown)."""
    try:
        return REWARDS.get(name)(**options)
    except TypeError as exc:
        raise RlboundError(f"reward {name!r}: bad options {sorted(options)} ({exc})") from None


def _norm(answer: str | None) -> str | None:
    return None if answer is None else " ".join(str(answer).split())


@REWARDS.register("correct")
def correct_reward() -> RewardFn:
    def reward(batch: RewardBatch) -> np.ndarray:
        return np.asarray(batch.correct, dtype=bool).astype(np.float64)
    return reward


@REWARDS.register("inverse")
def inverse_reward() -> RewardFn:
    def reward(batch: RewardBatch) -> np.ndarray:
        return 1.0 - np.asarray(batch.correct, dtype=bool).astype(np.float64)
    return reward


@REWARDS.register("format_only")
def format_reward() -> RewardFn:
    def reward(batch: RewardBatch) -> np.ndarray:
        return np.array([s != NO_ANSWER for s in batch.statuses], dtype=np.float64)
    return reward


def uniform_hash(seed: int, problem_id: str, sample_idx: int, step: int) -> float:
    """A uniform number in [0, 1) determined by its arguments (SHA-256 based)."""
    key = f"{seed}\x1f{problem_id}\x1f{sample_idx}\x1f{step}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0 ** 64


@REWARDS.register("random")
def random_reward(p: float = 0.5, seed: int = 0) -> RewardFn:
    if not 0 <= p <= 1:
        raise RlboundError(f"random reward: p must be in [0, 1], got {p}")

    def reward(batch: RewardBatch) -> np.ndarray:
        return np.array([uniform_hash(seed, str(pid), int(i), batch.step) < p
                         for pid, i in zip(batch.problem_ids, batch.sample_idx)], dtype=np.float64)
    return reward


@REWARDS.register("incorrect_label")
def incorrect_label_reward(labels: Mapping[str, str]) -> RewardFn:
    targets = {str(k): _norm(v) for k, v in labels.items()}

    def reward(batch: RewardBatch) -> np.ndarray:
        out = np.zeros(len(batch.problem_ids))
        for i, (pid, ans) in enumerate(zip(batch.problem_ids, batch.answers)):
            target = targets.get(str(pid))
            out[i] = float(ans is not None and target is not None and _norm(ans) == target)
        return out
    return reward


def majority_wrong_labels(answers_by_problem: Mapping[str, Sequence[str | None]],
                          correct_by_problem: Mapping[str, Sequence[bool]]) -> dict[str, str]:
    """Per problem, the most frequent *wrong* extracted answer of the base model's samples.

    Answers are counted after whitespace normalisation; missing answers (None) never count.
    Ties go to the lexicographically smallest answer, so the result is deterministic. Problems
    whose samples have no wrong extracted answer get no label (absent from the result).
    """
    labels = {}
    for pid, answers in answers_by_problem.items():
        correct = correct_by_problem[pid]
        if len(correct) != len(answers):
            raise ValueError(f"problem {pid!r}: {len(answers)} answers, {len(correct)} verdicts")
        counts = Counter(_norm(a) for a, c in zip(answers, correct) if a is not None and not c)
        if counts:
            labels[pid] = min(counts, key=lambda a: (-counts[a], a))
    return labels


def make_reward(name: str, *, p: float = 0.5, seed: int = 0,
                labels: Mapping[str, str] | None = None) -> Callable[..., np.ndarray]:
    """A reward over verifier verdicts, for the training loop.

    Returns ``fn(problem_ids, verdicts, step=None, sample_idx=None) -> np.ndarray`` where each
    verdict has ``answer``, ``correct`` and ``status`` (:class:`rlbound.verify.Verdict`).
    ``sample_idx`` defaults to each sample's occurrence number among the call's samples of its
    problem (its index in its group). ``step`` is required by the ``random`` reward, so that a
    problem's sample ``j`` is not given the same coin at every step. ``p`` and ``seed`` configure
    ``random``; ``labels`` (from :func:`majority_wrong_labels`) is required by
    ``incorrect_label``.
    """
    options: dict = {}
    if name == "random":
        options = {"p": p, "seed": seed}
    elif name == "incorrect_label":
        if labels is None:
            raise RlboundError("reward 'incorrect_label' needs labels: the base model's majority "
                               "wrong answer per problem (majority_wrong_labels)")
        options = {"labels": labels}
    inner = get_reward(name, **options)

    def reward(problem_ids, verdicts, step: int | None = None, sample_idx=None) -> np.ndarray:
        if step is None and name == "random":
            raise ValueError("the random reward needs the training step")
        if sample_idx is None:
            seen: Counter = Counter()
            sample_idx = []
            for pid in problem_ids:
                sample_idx.append(seen[pid])
                seen[pid] += 1
        batch = RewardBatch(list(problem_ids), list(sample_idx), [v.answer for v in verdicts],
                            [bool(v.correct) for v in verdicts], [v.status for v in verdicts],
                            step=step or 0)
        return inner(batch)

    return reward
