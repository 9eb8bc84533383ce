"""Problems, tasks and the task registry.

A :class:`Problem` is one question with its reference answer; a :class:`Task` is a named list of
problems together with the name of the verifier that grades answers to them and the prompt template
that suits them. Task families register a factory by name (``@register_task("arithmetic")``); the
factory takes keyword options (seed, size, difficulty, a file path, …) and returns a ``Task``.
This module holds no problem data and does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from rlbound.registry import Registry


@dataclass(frozen=True)
class Problem:
    """One problem: a stable ``id``, the question text, the reference answer, free metadata."""

    id: str
    prompt: str
    reference: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """A named problem set plus how to prompt for it and how to grade it.

    ``options`` are the factory arguments that built it; they are recorded in ``run.json`` so
    that a resumed run can check it is sampling the same problems.
    """

    name: str
    problems: tuple[Problem, ...]
    verifier: str
    template: str
    options: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.problems)


TaskFactory = Callable[..., Task]
TASKS: Registry[TaskFactory] = Registry(
    "task",
    lazy={
        "arithmetic": "rlbound.tasks.synthetic",
        "file": "rlbound.tasks.files",
        "countdown": "rlbound.lab.world",
        "programs": "rlbound.lab.world",
        "humaneval": "rlbound.tasks.code",
        "humaneval_plus": "rlbound.tasks.code",
        "mbpp": "rlbound.tasks.code",
        "mbpp_plus": "rlbound.tasks.code",
        "code_stdio": "rlbound.tasks.code",
    },
)
register_task = TASKS.register


def load_task(name: str, **options: Any) -> Task:
    """Build the task registered as ``name`` with the given options."""
    return TASKS.get(name)(**options)
