"""The in-memory form of one run's samples that every analysis reads.

:class:`RunSamples` is what the store hands to analyses and reports: per problem, the samples in
``sample_idx`` order with their correctness and extracted answers. It is a plain container; it
does no I/O (the store builds it) and no statistics (the analysis modules do). Beside it live
the two small helpers every analysis shares: matching two runs' problems by id, and turning a
statistic into a JSON-safe float.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlbound.errors import RlboundError


@dataclass
class RunSamples:
    """One run's verified samples, grouped by problem.

    ``correct[i]`` and ``answers[i]`` hold problem ``problem_ids[i]``'s samples in sample-index
    order (answers are None where nothing was extracted). ``meta`` is the run's ``run.json``.
    ``token_counts`` and ``entropy_means`` are per-sample arrays parallel to ``correct`` (entropy
    NaN where the engine could not compute it). ``texts`` holds the completion texts, parallel to
    ``correct`` (empty when the caller built the runs without them; the reasoning-pattern counts
    then say so instead of counting).
    """

    label: str
    problem_ids: list[str]
    correct: list[np.ndarray]
    answers: list[list[str | None]]
    token_counts: list[np.ndarray] = field(default_factory=list)
    entropy_means: list[np.ndarray] = field(default_factory=list)
    statuses: list[list[str]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    texts: list[list[str]] = field(default_factory=list)
    correct_base: list[np.ndarray] = field(default_factory=list)
    """Per problem, the verdicts on the base subset of the tests (code benchmarks with one, such
    as HumanEval+'s original tests), parallel to ``correct``; empty when the run has none."""

    def base_view(self) -> "RunSamples":
        """This run with its base-test verdicts as ``correct`` (label suffixed " (base tests)")."""
        if not self.correct_base:
            raise RlboundError(f"run {self.label!r} has no base-test verdicts (only code benchmarks with a "
                               "base subset, such as humaneval_plus or mbpp_plus, have them)")
        from dataclasses import replace

        return replace(self, label=f"{self.label} (base tests)", correct=list(self.correct_base), correct_base=[])

    @property
    def n(self) -> np.ndarray:
        """Samples per problem."""
        return np.array([len(c) for c in self.correct], dtype=np.int64)

    @property
    def c(self) -> np.ndarray:
        """Correct samples per problem."""
        return np.array([int(np.sum(c)) for c in self.correct], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.problem_ids)


def json_float(x: float | None) -> float | None:
    """A statistic as a JSON value: a float, or None for a missing, NaN or infinite one."""
    return None if x is None or not np.isfinite(x) else float(x)


def match_problem_ids(
    label_a: str, ids_a: list, label_b: str, ids_b: list, what: str
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Match two runs' problems by ``str(id)``: (common ids in A's order, indices in A, in B).

    Only the intersection counts. Raises :class:`RlboundError` (prefixed with ``what``) when a run
    lists an id twice or the runs share no id. Every two-run analysis matches problems this way.
    """
    a = [str(p) for p in ids_a]
    b = [str(p) for p in ids_b]
    for label, ids in ((label_a, a), (label_b, b)):
        if len(set(ids)) != len(ids):
            raise RlboundError(f"{what}: run {label!r} lists some problem id more than once")
    pos_b = {p: i for i, p in enumerate(b)}
    common = [p for p in a if p in pos_b]
    if not common:
        raise RlboundError(f"{what}: runs {label_a!r} and {label_b!r} have no problem ids in common")
    pos_a = {p: i for i, p in enumerate(a)}
    ia = np.array([pos_a[p] for p in common], dtype=np.int64)
    ib = np.array([pos_b[p] for p in common], dtype=np.int64)
    return common, ia, ib
