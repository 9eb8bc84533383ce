"""Support at the level of solutions: are the RL model's distinct correct solutions inside the base's?

:mod:`rlbound.analysis.support` asks, per problem, *whether* each run solves it; Wu et al. 2025
("The Invisible Leash") define support over *solutions*. Here, per common problem (matched by
id) and at a stated budget k, each run's distinct correct solutions are the distinct keys of the
correct samples among its first k samples by sample index (the same budget and the same first-k
rule as the problem-level support, so runs with different n compare fairly). Then, per problem:

- shared: the RL run's distinct correct solutions that the base run also produced;
- new (RL only): RL's distinct correct solutions the base did not produce;
- lost (base only): the base's distinct correct solutions RL did not produce.

Over problems:

- recovery (pooled) = Σ shared / Σ RL distinct — "what share of RL's solutions the base's
  samples already hold" (a reviewer of the large-k study asked for exactly this check);
- recovery (mean per problem) = mean of shared / RL distinct over the problems where RL has at
  least one correct solution;
- solution diversity of each run: its distinct correct solutions per problem, averaged over all
  common problems (unsolved ones count 0) and over the problems that run solves.

What counts as "the same solution" is a key function of the stored extracted ``answer``
(:func:`solution_key`), chosen from the runs' ``run.json`` by :func:`solution_key_kind` (the
caller passes the kind or its own function; nothing here reads files):

- ``"countdown"`` (the lab's countdown task, graded by the ``countdown`` verifier): the answer
  is the expression of the last ``#### <expression>`` line, with an optional ``=<target>``
  suffix; the key is :func:`rlbound.lab.countdown.countdown_normal_form` of the expression, so
  expressions that differ only by commutativity or associativity (``3*4+5`` and ``5+4*3``) are
  one solution. An answer the normal form cannot parse (only possible when the run was graded by
  other rules) keys as its whitespace-normalised text.
- ``"answer"`` (every other task): the extracted final answer, whitespace-normalised (runs of
  whitespace become one space, ends stripped). For single-answer tasks (maths, exact-match
  QA) this is **answer-level, not solution-level**: every correct sample states (nearly) the same
  answer, so a solved problem almost always has exactly 1 distinct correct "solution" and the
  recovery rate reduces to problem-level support. For code tasks the key is the extracted program
  text, so programs that differ in more than whitespace count as different solutions.

Correct samples without an extracted answer have no key: they are left out of the counts and
counted in ``correct_without_answer``. Rates with a 0 denominator are NaN (``None`` in
``to_dict``). Bands are percentile bootstrap intervals over common problems, the same resample
for both runs (paired); ratios are ratios of replicate means, and replicates where a ratio is
undefined are left out of its band and counted in ``undefined_frac``.

What it does not do: no I/O, no plotting; it does not judge whether two differently written
solutions are "the same reasoning" beyond the key above (no semantic clustering of completion
texts), does not estimate solutions beyond the samples drawn, and does not correct for k.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlbound.analysis.bootstrap import bootstrap_means, check_bootstrap_args, percentile_interval
from rlbound.analysis.coverage import _check_k, _subset, match_problems, solved_at_k
from rlbound.analysis.samples import RunSamples, json_float
from rlbound.analysis.support import _div
from rlbound.errors import RlboundError

KEY_KINDS = ("countdown", "answer")
KEY_DEFINITIONS = {
    "countdown": "countdown normal form of the answer expression (equal up to commutativity and "
                 "associativity of + - and of * /)",
    "answer": "extracted final answer, whitespace-normalised (answer-level: a single-answer task has "
              "about 1 distinct correct answer per solved problem)",
    "custom": "the caller's key function of the extracted answer",
}
ESTIMATES = ("recovery_pooled", "recovery_mean", "base_diversity", "rl_diversity",
             "base_diversity_solved", "rl_diversity_solved")


def answer_key(answer: str) -> str:
    """An extracted answer with its whitespace normalised (the ``"answer"`` key)."""
    return " ".join(str(answer).split())


def countdown_key(answer: str) -> str:
    """The countdown normal form of an answer expression (``=<target>`` suffix dropped)."""
    from rlbound.lab.countdown import countdown_normal_form

    text = str(answer).strip()
    if text.count("=") == 1:
        text = text.split("=")[0]
    try:
        return countdown_normal_form(text)
    except (ValueError, RecursionError):
        return answer_key(answer)


def solution_key(kind: str) -> Callable[[str], str]:
    """The key function of ``kind`` (one of :data:`KEY_KINDS`)."""
    keys = {"countdown": countdown_key, "answer": answer_key}
    if kind not in keys:
        raise RlboundError(f"solutions: unknown key kind {kind!r}; choose from {', '.join(KEY_KINDS)}")
    return keys[kind]


def _name(spec: Any) -> Any:
    return spec.get("name") if isinstance(spec, Mapping) else spec


def solution_key_kind(*metas: Mapping[str, Any] | None) -> str:
    """``"countdown"`` when every given run.json says its run is graded by the ``countdown``
    verifier (or, without a recorded verifier, is of the ``countdown`` task), else ``"answer"``."""
    def is_countdown(meta: Mapping[str, Any] | None) -> bool:
        meta = meta or {}
        config = meta.get("config") if isinstance(meta.get("config"), Mapping) else {}
        verifier = _name(config.get("verifier") or meta.get("verifier"))
        if verifier:
            return verifier == "countdown"
        return _name(config.get("task") or meta.get("task")) == "countdown"

    return "countdown" if metas and all(is_countdown(m) for m in metas) else "answer"


def distinct_correct(run: RunSamples, k: int, key: Callable[[str], str]) -> tuple[list[set[str]], int]:
    """Per problem of ``run``, the set of keys of its correct samples among the first k (by index),
    and how many of those correct samples had no extracted answer (left out)."""
    if len(run.answers) != len(run.problem_ids):
        raise RlboundError(f"solutions: run {run.label!r} has no extracted answers recorded")
    solved_at_k(run, k, what="solutions")  # refuses k > n, naming the problem
    cache: dict[str, str] = {}
    sets, unkeyed = [], 0
    for cor, answers in zip(run.correct, run.answers):
        keys: set[str] = set()
        for ok, answer in zip(np.asarray(cor)[:k], answers[:k]):
            if not ok:
                continue
            if answer is None:
                unkeyed += 1
                continue
            if answer not in cache:
                cache[answer] = key(answer)
            keys.add(cache[answer])
        sets.append(keys)
    return sets, unkeyed


@dataclass
class Estimate:
    """One number with its bootstrap band; ``undefined_frac``: replicates where it was undefined."""

    value: float
    lo: float = float("nan")
    hi: float = float("nan")
    undefined_frac: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"value": json_float(self.value), "lo": json_float(self.lo), "hi": json_float(self.hi),
                "undefined_frac": json_float(self.undefined_frac)}


@dataclass
class SolutionSupport:
    """Distinct correct solutions of ``label_base`` and ``label_rl`` at budget k, per common problem.

    ``base_distinct``/``rl_distinct``/``shared`` are per-problem counts parallel to ``problem_ids``
    (base order); ``estimates`` maps each name of :data:`ESTIMATES` to an :class:`Estimate`.
    """

    label_base: str
    label_rl: str
    k: int
    key_kind: str
    problem_ids: list[str]
    base_distinct: np.ndarray
    rl_distinct: np.ndarray
    shared: np.ndarray
    estimates: dict[str, Estimate]
    base_without_answer: int = 0
    rl_without_answer: int = 0
    ci: float = 0.95
    n_boot: int = 0
    new: np.ndarray = field(init=False)
    lost: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.new = self.rl_distinct - self.shared
        self.lost = self.base_distinct - self.shared

    @property
    def n_problems(self) -> int:
        return len(self.problem_ids)

    def to_dict(self) -> dict[str, Any]:
        est = {name: e.to_dict() for name, e in self.estimates.items()}
        return {
            "base": self.label_base, "rl": self.label_rl, "k": self.k, "n_problems": self.n_problems,
            "key": self.key_kind, "key_definition": KEY_DEFINITIONS.get(self.key_kind, KEY_DEFINITIONS["custom"]),
            "counts": {"base_distinct": int(self.base_distinct.sum()), "rl_distinct": int(self.rl_distinct.sum()),
                       "shared": int(self.shared.sum()), "new": int(self.new.sum()), "lost": int(self.lost.sum())},
            "problems_with_rl_solutions": int((self.rl_distinct > 0).sum()),
            "recovery": {"pooled": est["recovery_pooled"], "mean_per_problem": est["recovery_mean"],
                         "definition": "shared / RL's distinct correct solutions; pooled = sums over problems, "
                                       "mean_per_problem over problems where RL has one"},
            "diversity": {"base": {"mean": est["base_diversity"], "mean_solved": est["base_diversity_solved"]},
                          "rl": {"mean": est["rl_diversity"], "mean_solved": est["rl_diversity_solved"]},
                          "definition": "distinct correct solutions per problem: mean over common problems, "
                                        "and over the problems the run solves"},
            "correct_without_answer": {"base": self.base_without_answer, "rl": self.rl_without_answer},
            "ci": self.ci, "n_boot": self.n_boot,
            "per_problem": [{"problem_id": p, "base": int(b), "rl": int(r), "shared": int(s),
                             "new": int(n), "lost": int(lo)}
                            for p, b, r, s, n, lo in zip(self.problem_ids, self.base_distinct, self.rl_distinct,
                                                         self.shared, self.new, self.lost)],
        }


def _estimates(columns: np.ndarray) -> dict[str, Any]:
    """The :data:`ESTIMATES` from (replicate) means of the per-problem columns; NaN on a 0 denominator.

    Columns: shared, RL distinct, RL per-problem recovery (0 where undefined), RL has a solution,
    base distinct, base has a solution.
    """
    shared, rl, rate, rl_has, base, base_has = (columns[..., j] for j in range(6))
    return {"recovery_pooled": _div(shared, rl), "recovery_mean": _div(rate, rl_has),
            "base_diversity": base, "rl_diversity": rl,
            "base_diversity_solved": _div(base, base_has), "rl_diversity_solved": _div(rl, rl_has)}


def solution_support(
    base: RunSamples, rl: RunSamples, k: int, key: str | Callable[[str], str] = "answer", *,
    n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
) -> SolutionSupport:
    """Shared / new / lost distinct correct solutions at budget k, recovery and diversity with bands.

    ``key`` is a kind of :data:`KEY_KINDS` (pick it with :func:`solution_key_kind`) or a function
    from an extracted answer to its solution key. Problems are matched by id (an error if none are
    common); k > n for any common problem, or a run without extracted answers, raises
    :class:`RlboundError`.
    """
    check_bootstrap_args(n_boot, ci)
    k = _check_k(k, "solutions")
    kind, key_fn = ("custom", key) if callable(key) else (key, solution_key(key))
    common, ib, ir = match_problems(base, rl, "solutions")
    sets_b, none_b = distinct_correct(_subset(base, ib), k, key_fn)
    sets_r, none_r = distinct_correct(_subset(rl, ir), k, key_fn)
    nb = np.array([len(s) for s in sets_b], dtype=np.int64)
    nr = np.array([len(s) for s in sets_r], dtype=np.int64)
    shared = np.array([len(a & b) for a, b in zip(sets_b, sets_r)], dtype=np.int64)
    per_rate = np.where(nr > 0, shared / np.maximum(nr, 1), 0.0)
    columns = np.stack([shared, nr, per_rate, nr > 0, nb, nb > 0], axis=1).astype(np.float64)
    point = _estimates(columns.mean(axis=0))
    estimates = {name: Estimate(float(point[name])) for name in ESTIMATES}
    if n_boot:
        (reps,) = bootstrap_means([columns], n_boot, seed)
        for name, vals in _estimates(reps).items():
            ok = np.isfinite(vals)
            e = estimates[name]
            e.undefined_frac = float(1.0 - ok.mean())
            if ok.any():
                lo, hi = percentile_interval(vals[ok], ci)
                e.lo, e.hi = float(lo), float(hi)
    return SolutionSupport(base.label, rl.label, k, kind, common, nb, nr, shared, estimates,
                           none_b, none_r, ci, int(n_boot))
