"""The lab's problem sets and pretraining corpora: which problems, which strategies, which errors.

* :func:`lab_problem` draws problem ``index`` of a family from a split with the world's class mix
  (the share of countdown problems that need a tree; the programs difficulties);
* :func:`lab_task` is a :class:`Task` of such problems (the lab's test sets, and the fresh
  training problems that distillation and self-training sample);
* :func:`build_corpus` writes the training traces of a corpus: for each training problem,
  ``traces_per_problem`` traces, each from a strategy drawn by its share, solved or failed as the
  ``solves`` knob says, with wrong steps at ``error_rate`` (see :mod:`rlbound.lab.strategies`).

Everything is a pure function of the configuration (seeded with strings, so ``PYTHONHASHSEED``
does not matter). Corpus problems come from the train split at indices ``0 ..``; distillation,
self-training and RL draw theirs from :data:`DISTILL_OFFSET`, :data:`SELF_TRAIN_OFFSET` and
:data:`RL_OFFSET` on, so the four sets do not share indices, and no train-split problem is ever a
test problem.

What it does not do: train models or sample them (:mod:`rlbound.lab.pipeline`).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlbound.errors import RlboundError
from rlbound.lab.strategies import CAPABLE, FAMILY_OF_STRATEGY, write_trace
from rlbound.lab.world import countdown_problem, program_problem
from rlbound.tasks.base import Problem, Task
from rlbound.tasks.templates import get_template

if TYPE_CHECKING:  # pragma: no cover
    from rlbound.lab.config import CorpusConfig, WorldConfig

__all__ = ["CorpusExample", "DISTILL_OFFSET", "RL_OFFSET", "SELF_TRAIN_OFFSET", "FAMILIES", "build_corpus",
           "check_corpus_config", "corpus_problem_count", "corpus_stats", "lab_problem", "lab_task"]

FAMILIES = ("countdown", "programs")
VERIFIER_OF_FAMILY = {"countdown": "countdown", "programs": "exact"}
DISTILL_OFFSET = 1_000_000
SELF_TRAIN_OFFSET = 2_000_000
RL_OFFSET = 3_000_000
TEMPLATE = "plain"


@dataclass(frozen=True)
class CorpusExample:
    """One training trace: the rendered prompt, the completion, and where it came from."""

    prompt: str
    completion: str
    family: str
    strategy: str
    problem_class: str
    solved: bool


def lab_problem(family: str, world: "WorldConfig", index: int, split: str) -> Problem:
    """Problem ``index`` of ``family`` in ``split``, drawn with the world's class mix."""
    rng = random.Random(f"lab/{family}/{world.seed}/{split}/{index}")
    if family == "countdown":
        shape = "tree" if rng.random() < world.tree_share else "chain"
        if world.countdown_difficulty < 2:
            shape = None  # three numbers: every problem is a chain
        return countdown_problem(world.seed, world.countdown_difficulty, index, split, shape)
    if family == "programs":
        difficulty = rng.choice(list(world.programs_difficulties))
        return program_problem(world.seed, difficulty, index, split)
    raise RlboundError(f"unknown lab family {family!r}; choose from {FAMILIES}")


def lab_task(family: str, world: "WorldConfig", n: int, split: str = "test", offset: int = 0) -> Task:
    """``n`` problems of ``family`` (indices ``offset ..``) as a task with its verifier."""
    problems = tuple(lab_problem(family, world, offset + i, split) for i in range(n))
    return Task(
        name=family,
        problems=problems,
        verifier=VERIFIER_OF_FAMILY[family],
        template=TEMPLATE,
        options={"lab_world": world.as_dict(), "n": n, "split": split, "offset": offset},
    )


def check_corpus_config(corpus: "CorpusConfig", where: str) -> None:
    """Raise a one-line error naming the knob if ``corpus`` asks for something impossible."""
    for family, share in corpus.family_shares.items():
        if family not in FAMILIES:
            raise RlboundError(f"{where}.family_shares: unknown family {family!r}; choose from {FAMILIES}")
        if share < 0:
            raise RlboundError(f"{where}.family_shares.{family} must be >= 0, got {share}")
    if sum(corpus.family_shares.values()) <= 0:
        raise RlboundError(f"{where}.family_shares: at least one family needs a positive share")
    for strategy, share in corpus.strategy_shares.items():
        if strategy not in CAPABLE:
            raise RlboundError(f"{where}.strategy_shares: unknown strategy {strategy!r}; choose from {sorted(CAPABLE)}")
        if share < 0:
            raise RlboundError(f"{where}.strategy_shares.{strategy} must be >= 0, got {share}")
    for family, share in corpus.family_shares.items():
        own = [s for s, f in FAMILY_OF_STRATEGY.items() if f == family]
        if share > 0 and sum(corpus.strategy_shares.get(s, 0.0) for s in own) <= 0:
            raise RlboundError(f"{where}: family {family!r} has a share but none of its strategies "
                               f"({', '.join(own)}) does")
    for strategy, classes in corpus.solves.items():
        if strategy not in CAPABLE:
            raise RlboundError(f"{where}.solves: unknown strategy {strategy!r}; choose from {sorted(CAPABLE)}")
        for problem_class in classes:
            if problem_class not in CAPABLE[strategy]:
                raise RlboundError(
                    f"{where}.solves.{strategy}: it cannot solve {problem_class!r} problems "
                    f"(it can solve {', '.join(CAPABLE[strategy])})"
                )
    if not 0 <= corpus.error_rate <= 1:
        raise RlboundError(f"{where}.error_rate must be in [0, 1], got {corpus.error_rate}")
    if corpus.problems < 1 or corpus.traces_per_problem < 1:
        raise RlboundError(f"{where}: problems and traces_per_problem must be >= 1")


def _family_counts(corpus: "CorpusConfig") -> dict[str, int]:
    total = sum(corpus.family_shares.values())
    counts = {f: int(round(corpus.problems * s / total)) for f, s in corpus.family_shares.items() if s > 0}
    return {f: c for f, c in counts.items() if c > 0}


def build_corpus(world: "WorldConfig", corpus: "CorpusConfig", where: str = "corpus",
                 progress_bar=None) -> list[CorpusExample]:
    """The corpus's training traces, in a seeded shuffled order."""
    check_corpus_config(corpus, where)
    template = get_template(TEMPLATE)
    examples: list[CorpusExample] = []
    for family, count in _family_counts(corpus).items():
        names = [s for s, f in FAMILY_OF_STRATEGY.items() if f == family and corpus.strategy_shares.get(s, 0) > 0]
        weights = [corpus.strategy_shares[s] for s in names]
        for index in range(count):
            problem = lab_problem(family, world, index, "train")
            prompt = template.render(problem.prompt)
            rng = random.Random(f"corpus/{corpus.seed}/{family}/{index}")
            for _ in range(corpus.traces_per_problem):
                strategy = rng.choices(names, weights)[0]
                solve = problem.metadata["class"] in corpus.solves.get(strategy, ())
                completion = write_trace(strategy, problem, solve, rng, corpus.error_rate,
                                         corpus.max_dead_ends)
                examples.append(CorpusExample(prompt, completion, family, strategy,
                                              problem.metadata["class"], solve))
            if progress_bar is not None:
                progress_bar.advance(1)
    random.Random(f"corpus-order/{corpus.seed}").shuffle(examples)
    return examples


def corpus_problem_count(corpus: "CorpusConfig") -> int:
    """How many problems :func:`build_corpus` draws (for progress bars)."""
    return sum(_family_counts(corpus).values())


def corpus_stats(examples: list[CorpusExample]) -> dict[str, dict[str, int]]:
    """Traces per ``family/strategy/class``, and how many of them solve their problem."""
    traces = Counter(f"{e.family}/{e.strategy}/{e.problem_class}" for e in examples)
    solved = Counter(f"{e.family}/{e.strategy}/{e.problem_class}" for e in examples if e.solved)
    return {key: {"traces": traces[key], "solved": solved[key]} for key in sorted(traces)}

