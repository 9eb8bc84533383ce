"""The in-memory form of one run's samples that every analysis reads.

:class:`RunSamples` is what the store hands to analyses and reports: per problem, the samples in
``sample_idx`` order with their correctness and extracted answers. It is a plain container; it
does no I/O (the store builds it) and no statistics (the analysis modules do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class RunSamples:
    """One run's verified samples, grouped by problem.

    ``correct[i]`` and ``answers[i]`` hold problem ``problem_ids[i]``'s samples in sample-index
    order (answers are None where nothing was extracted). ``meta`` is the run's ``run.json``.
    ``token_counts`` and ``entropy_means`` are per-sample arrays parallel to ``correct`` (entropy
    NaN where the engine could not compute it).
    """

    label: str
    problem_ids: list[str]
    correct: list[np.ndarray]
    answers: list[list[str | None]]
    token_counts: list[np.ndarray] = field(default_factory=list)
    entropy_means: list[np.ndarray] = field(default_factory=list)
    statuses: list[list[str]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

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
