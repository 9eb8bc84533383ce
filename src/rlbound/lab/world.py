"""The lab world: the procedurally generated task families the tiny model is pretrained on.

Two families, each registered as a task (options ``n``, ``seed``, ``difficulty``, ``split``,
``offset``; or ``lab_world``, the lab's world knobs, which a lab run records so that its task can
be rebuilt by name, e.g. by ``rlbound score``):

* ``countdown`` (:mod:`rlbound.lab.countdown`): reach a target from 3-5 numbers with ``+ - * /``;
  many solutions per problem; graded by the ``countdown`` verifier.
* ``programs`` (:mod:`rlbound.lab.programs`): evaluate a straight-line program; graded by
  ``exact``.

Determinism: problem ``i`` of ``(family, seed, difficulty, split)`` depends only on those (string
seeds go through SHA-512 in :class:`random.Random`, so ``PYTHONHASHSEED`` does not matter), and any
prefix of a larger set equals the smaller set.

Splits are disjoint by construction: a problem's canonical form (numbers sorted + target, or the
program text) is hashed with SHA-256 and the hash alone decides its split (:func:`split_of`; 20 %
test, 80 % train). Generators draw candidates until one falls in the requested split, so the same
problem can never appear in both. Problems may repeat *within* a split at low difficulty, where the
space of problems is small. Every problem's prompt and trace are newline + printable ASCII and
short (the rendered ``plain`` prompt plus the trace stays under 256 characters), for the tiny
character-level model. The trace lies in ``metadata["solution"]``.
"""

from __future__ import annotations

import hashlib
import random

from rlbound.errors import RlboundError
from rlbound.lab.countdown import (
    COUNTDOWN_LEVELS,
    countdown_canonical,
    countdown_reference,
    countdown_trace,
    random_countdown,
)
from rlbound.lab.programs import PROGRAM_MAX_DIFFICULTY, program_trace, random_program, run_program
from rlbound.lab.strategies import CLASSES, countdown_shape, program_class
from rlbound.tasks.base import Problem, Task, register_task

__all__ = [
    "SPLITS",
    "TEST_BUCKETS",
    "countdown_problem",
    "countdown_task",
    "program_problem",
    "programs_task",
    "split_of",
]

SPLITS = ("train", "test")
HASH_BUCKETS = 10
TEST_BUCKETS = 2  # buckets 0..TEST_BUCKETS-1 of HASH_BUCKETS are the test split
MAX_ATTEMPTS = 10_000


def split_of(family: str, canonical: str) -> str:
    """The split (``"train"`` or ``"test"``) that a problem's canonical form belongs to."""
    digest = hashlib.sha256(f"{family}:{canonical}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % HASH_BUCKETS < TEST_BUCKETS else "train"


def _check(family: str, difficulty: int, top: int, split: str, n: int) -> None:
    if not 1 <= difficulty <= top:
        raise RlboundError(f"{family} difficulty must be 1..{top}, got {difficulty}")
    if split not in SPLITS:
        raise RlboundError(f"{family} split must be 'train' or 'test', got {split!r}")
    if n < 1:
        raise RlboundError(f"{family} task needs n >= 1 problems, got {n}")


def countdown_problem(
    seed: int, difficulty: int, index: int, split: str = "test", shape: str | None = None
) -> Problem:
    """Problem ``index`` of the countdown family for ``(seed, difficulty, split)``.

    ``shape`` (``"chain"`` or ``"tree"``, see :mod:`rlbound.lab.strategies`) keeps drawing until
    the problem has that class; problems drawn with a shape get their own ids and indices.
    """
    if shape is not None and shape not in CLASSES["countdown"]:
        raise RlboundError(f"countdown shape must be one of {CLASSES['countdown']}, got {shape!r}")
    if shape == "tree" and difficulty < 2:
        raise RlboundError("countdown: 3 numbers (difficulty 1) never need a tree; use difficulty >= 2")
    tag = "" if shape is None else f"/{shape}"
    for attempt in range(MAX_ATTEMPTS * (1 if shape is None else 10)):
        rng = random.Random(f"countdown/{seed}/{difficulty}/{split}/{index}/{attempt}{tag}")
        numbers, target, expression = random_countdown(rng, difficulty)
        canonical = countdown_canonical(numbers, target)
        if split_of("countdown", canonical) != split:
            continue
        problem_class = countdown_shape(numbers, target)
        if shape is None or problem_class == shape:
            break
    else:  # pragma: no cover - 20 % of candidates are test, 80 % train; >= 2 % are trees
        raise RlboundError("countdown: no candidate fell in the requested split and shape")
    return Problem(
        id=f"countdown-{split}-d{difficulty}{'' if shape is None else '-' + shape}-s{seed}-{index}",
        prompt=f"{' '.join(str(n) for n in numbers)} -> {target}",
        reference=countdown_reference(numbers, target),
        metadata={
            "family": "countdown",
            "class": problem_class,
            "difficulty": difficulty,
            "split": split,
            "numbers": numbers,
            "target": target,
            "expression": expression,
            "canonical": canonical,
            "solution": countdown_trace(numbers, target, expression),
        },
    )


def program_problem(seed: int, difficulty: int, index: int, split: str = "test") -> Problem:
    """Problem ``index`` of the programs family for ``(seed, difficulty, split)``."""
    for attempt in range(MAX_ATTEMPTS):
        rng = random.Random(f"programs/{seed}/{difficulty}/{split}/{index}/{attempt}")
        program = random_program(rng, difficulty)
        if split_of("programs", program) == split:
            break
    else:  # pragma: no cover
        raise RlboundError("programs: no candidate fell in the requested split")
    return Problem(
        id=f"programs-{split}-d{difficulty}-s{seed}-{index}",
        prompt=program,
        reference=str(run_program(program)),
        metadata={
            "family": "programs",
            "class": program_class(program),
            "difficulty": difficulty,
            "split": split,
            "canonical": program,
            "solution": program_trace(program),
        },
    )


def _lab_world_task(family: str, lab_world: dict, n: int, split: str, offset: int) -> Task:
    """The lab's own problem set (its world's class mix), as :func:`rlbound.lab.corpus.lab_task`
    recorded it in a run's options: lets a stored lab run's task be rebuilt by name."""
    from rlbound.lab.config import WorldConfig
    from rlbound.lab.corpus import lab_task

    try:
        world = WorldConfig(**lab_world)
    except TypeError as exc:
        raise RlboundError(f"{family}: lab_world is not a lab world configuration ({exc})") from None
    return lab_task(family, world, n, split=split, offset=offset)


@register_task("countdown")
def countdown_task(
    n: int = 100, seed: int = 0, difficulty: int = 2, split: str = "test", offset: int = 0,
    shape: str | None = None, lab_world: dict | None = None,
) -> Task:
    """``n`` countdown problems (indices ``offset .. offset+n-1``); difficulty 1..5; ``shape``
    ``chain`` or ``tree`` keeps only problems of that class. ``lab_world`` (a lab world's knobs, as a
    lab run records them) draws the lab's problems instead, and the world's seed and mix win."""
    if lab_world is not None:
        return _lab_world_task("countdown", lab_world, n, split, offset)
    _check("countdown", difficulty, max(COUNTDOWN_LEVELS), split, n)
    problems = tuple(countdown_problem(seed, difficulty, offset + i, split, shape) for i in range(n))
    return Task(
        name="countdown",
        problems=problems,
        verifier="countdown",
        template="plain",
        options={"n": n, "seed": seed, "difficulty": difficulty, "split": split, "offset": offset,
                 "shape": shape},
    )


@register_task("programs")
def programs_task(
    n: int = 100, seed: int = 0, difficulty: int = 3, split: str = "test", offset: int = 0,
    lab_world: dict | None = None,
) -> Task:
    """``n`` program-evaluation problems (indices ``offset .. offset+n-1``); difficulty 1..6;
    ``lab_world`` as for countdown."""
    if lab_world is not None:
        return _lab_world_task("programs", lab_world, n, split, offset)
    _check("programs", difficulty, PROGRAM_MAX_DIFFICULTY, split, n)
    problems = tuple(program_problem(seed, difficulty, offset + i, split) for i in range(n))
    return Task(
        name="programs",
        problems=problems,
        verifier="exact",
        template="plain",
        options={"n": n, "seed": seed, "difficulty": difficulty, "split": split, "offset": offset},
    )
