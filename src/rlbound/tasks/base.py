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
    """One problem: a stable ``id``, the question text, the reference answer, free metadata.

    ``images`` (visual tasks) are the problem's images, in the order the prompt refers to them:
    absolute file paths or encoded image bytes (PNG, JPEG, ...; see :mod:`rlbound.images`).
    Only engines that take images (``hf`` with an image-text model, ``vllm``) accept them.
    """

    id: str
    prompt: str
    reference: str
    metadata: dict[str, Any] = field(default_factory=dict)
    images: tuple[str | bytes, ...] = ()


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
    source: dict[str, Any] = field(default_factory=dict)
    """Where the problems were read from (a named benchmark's file or hub dataset and revision);
    recorded in ``run.json`` as ``task_source`` but not compared on resume: the problems' sha256
    (:func:`problems_sha256`) is what must match."""

    def __len__(self) -> int:
        return len(self.problems)


def problems_sha256(problems: tuple[Problem, ...] | list[Problem]) -> str:
    """The sha256 of the problems' ids, prompts and references (and images, where they carry
    any), in id order: two runs with equal digests sampled the same problems."""
    import hashlib
    import json

    digest = hashlib.sha256()
    for problem in sorted(problems, key=lambda p: p.id):
        digest.update(json.dumps([problem.id, problem.prompt, problem.reference]).encode())
        for image in getattr(problem, "images", ()) or ():
            digest.update(_image_digest(image).encode())
    return digest.hexdigest()


def _image_digest(image: Any) -> str:
    """A digest of one problem image: its bytes where they are at hand, else its text form."""
    import hashlib
    from pathlib import Path

    if isinstance(image, (bytes, bytearray)):
        return hashlib.sha256(image).hexdigest()
    if isinstance(image, dict) and isinstance(image.get("bytes"), (bytes, bytearray)):
        return hashlib.sha256(image["bytes"]).hexdigest()
    if isinstance(image, (str, Path)) and Path(image).is_file():
        return hashlib.sha256(Path(image).read_bytes()).hexdigest()
    return hashlib.sha256(str(image).encode()).hexdigest()


TaskFactory = Callable[..., Task]
TASKS: Registry[TaskFactory] = Registry(
    "task",
    lazy={
        "arithmetic": "rlbound.tasks.synthetic",
        "file": "rlbound.tasks.files",
        "countdown": "rlbound.lab.world",
        "programs": "rlbound.lab.world",
        "code_stdio": "rlbound.tasks.code",
        **{name: "rlbound.tasks.benchmarks" for name in (
            "math500", "aime24", "aime25", "amc23", "minerva", "olympiadbench", "gsm8k", "humaneval",
            "humaneval_plus", "mbpp", "mbpp_plus", "livecodebench", "mathvista", "mathvision", "simpleqa")},
    },
)
register_task = TASKS.register


def load_task(name: str, **options: Any) -> Task:
    """Build the task registered as ``name`` with the given options."""
    return TASKS.get(name)(**options)
