"""Wrong labels for the ``incorrect_label`` reward, read from a stored run of the base model.

:func:`labels_from_run` groups a run's extracted answers and verdicts by problem and hands them to
:func:`rlbound.train.rewards.majority_wrong_labels` (the base model's most frequent wrong answer per
problem, Shao et al. 2025). ``rlbound train --labels-from RUN`` and the lab's ``labels-base`` stage
both use it.

What it does not do: sample the base model (``rlbound sample`` or the lab do that).
"""

from __future__ import annotations

from pathlib import Path

from rlbound.errors import RlboundError
from rlbound.store import load_run
from rlbound.train.rewards import majority_wrong_labels

__all__ = ["labels_from_run"]


def labels_from_run(run_dir: str | Path) -> dict[str, str]:
    """Problem id → the run's most frequent wrong answer (problems with no wrong answer left out)."""
    samples = load_run(run_dir).samples
    labels = majority_wrong_labels(dict(zip(samples.problem_ids, samples.answers)),
                                   dict(zip(samples.problem_ids, (c.tolist() for c in samples.correct))))
    if not labels:
        raise RlboundError(f"run '{run_dir}': no sample has a wrong extracted answer, so no problem gets an "
                           "incorrect label; sample the base model more")
    return labels
