"""pass@1 and pass@k per problem group (e.g. the lab's "tree" and "chain" problems).

The caller maps problem ids to group labels; :func:`group_pass_at_k` reports, per run and group,
the number of problems, pass@1 and pass@k at one k shared by every run and group — the largest
common k, i.e. the smallest n over all grouped problems of all runs — each with its percentile
bootstrap band over that group's problems. The numbers come from
:func:`rlbound.analysis.passk.pass_at_k_curve` (no formula of its own).

Problems a run has but the mapping does not name are left out (their count is kept); ids the
mapping names but a run lacks are simply absent from that run's groups.

What it does not do: no grouping of its own (the mapping is the caller's), no comparison
between groups or runs, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from rlbound.analysis.passk import pass_at_k_curve
from rlbound.analysis.samples import RunSamples, json_float
from rlbound.errors import RlboundError


@dataclass
class GroupPassAtK:
    """One (run, group) cell: ``pass1`` and ``passk`` are (mean, lo, hi) at k = 1 and k = ``k``."""

    run: str
    group: str
    n_problems: int
    k: int
    pass1: tuple[float, float, float]
    passk: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        def trio(t):
            return {"mean": json_float(t[0]), "lo": json_float(t[1]), "hi": json_float(t[2])}

        return {"run": self.run, "group": self.group, "n_problems": self.n_problems, "k": self.k,
                "pass_at_1": trio(self.pass1), "pass_at_k": trio(self.passk)}


@dataclass
class GroupResults:
    """Every (run, group) cell at the common ``k``; ``ungrouped[run]`` counts problems left out."""

    k: int
    groups: list[str]
    cells: list[GroupPassAtK]
    ungrouped: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "k_definition": "largest common k: smallest n over all grouped problems of all runs",
                "groups": self.groups, "cells": [c.to_dict() for c in self.cells], "ungrouped": self.ungrouped}


def group_pass_at_k(
    runs: Sequence[RunSamples],
    groups: Mapping[str, str],
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> GroupResults:
    """pass@1 and pass@k per (run, group); raises :class:`RlboundError` when no run problem is grouped."""
    mapping = {str(p): str(g) for p, g in groups.items()}
    members: list[dict[str, np.ndarray]] = []
    ungrouped: dict[str, int] = {}
    for run in runs:
        labels = [mapping.get(str(p)) for p in run.problem_ids]
        ungrouped[run.label] = sum(1 for g in labels if g is None)
        by_group: dict[str, list[int]] = {}
        for i, g in enumerate(labels):
            if g is not None:
                by_group.setdefault(g, []).append(i)
        members.append({g: np.asarray(ix, dtype=np.int64) for g, ix in by_group.items()})
    if not any(members):
        raise RlboundError("report: the problem groups name none of the runs' problem ids "
                           "(the groups mapping must be keyed by problem id)")
    group_names = sorted({g for m in members for g in m})
    k = int(min(int(run.n[ix].min()) for run, m in zip(runs, members) for ix in m.values()))
    if k < 1:
        raise RlboundError("report: some grouped problem has no samples; cannot compute pass@k per group")
    cells = []
    for run, m in zip(runs, members):
        n, c = run.n, run.c
        for g in group_names:
            if g not in m:
                continue
            ix = m[g]
            curve = pass_at_k_curve((n[ix], c[ix]), ks=sorted({1, k}), n_boot=n_boot, ci=ci, seed=seed)
            cells.append(GroupPassAtK(run.label, g, int(ix.size), k, curve.at(1), curve.at(k)))
    return GroupResults(k, group_names, cells, ungrouped)
