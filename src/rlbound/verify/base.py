"""Verdicts, verifier protocol and the verifier registry.

A verifier turns a completion into a :class:`Verdict` in two steps with different costs:

* ``extract(completion)`` pulls the final answer out of the text (cheap, pure string work, run in
  the calling process); ``None`` means no answer could be found.
* ``equivalent(reference, answer)`` decides whether the extracted answer matches the reference.
  This may be slow or even hang (symbolic maths), so the pool in :mod:`rlbound.verify.pool` runs
  it in worker processes under a hard wall-clock limit and caches it by
  ``(reference, normalise(answer))``.

Verifiers that grade in richer ways override ``check(reference, answer)`` instead, which returns
a :class:`CheckResult`: the status of the check and, for benchmarks with a base subset of their
tests (HumanEval+/MBPP+: the original tests), the verdict on that subset too (``correct_base``).
The default ``check`` calls ``equivalent``.

Statuses: ``ok`` (checked; ``correct`` says the result), ``no_answer`` (nothing extracted),
``timeout`` (the hard limit killed the check) and ``error`` (the check raised, or the program
under test crashed). Code verification adds ``memory`` (the program passed its memory limit),
``output_limit`` (it printed past its cap) and ``sandbox_error`` (the sandbox itself failed: not
the program's fault; such checks are never cached, and reports flag them). Factual QA adds
``not_attempted`` (the answer declines: "I don't know"; graded by the ``qa`` rules or the
``qa-judge`` judge), which SimpleQA's numbers keep apart from wrong attempts. Everything but
``ok`` counts as incorrect and is reported.

:meth:`Verifier.reference_for` is the reference string a verifier grades a problem against; by
default the problem's ``reference``. The QA judge adds the question to it (it grades
(question, gold, answer) triples), so the question is part of the cache key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

from rlbound.registry import Registry

STATUS_OK = "ok"
STATUS_NO_ANSWER = "no_answer"
STATUS_TIMEOUT = "timeout"
STATUS_ERROR = "error"
STATUS_MEMORY = "memory"
STATUS_OUTPUT_LIMIT = "output_limit"
STATUS_SANDBOX_ERROR = "sandbox_error"
STATUS_NOT_ATTEMPTED = "not_attempted"
STATUSES = (STATUS_OK, STATUS_NO_ANSWER, STATUS_TIMEOUT, STATUS_ERROR, STATUS_MEMORY,
            STATUS_OUTPUT_LIMIT, STATUS_SANDBOX_ERROR, STATUS_NOT_ATTEMPTED)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``correct``, its ``status``, and ``correct_base``, the verdict on
    the base subset of the tests where the task has one (None elsewhere)."""

    correct: bool
    status: str = STATUS_OK
    correct_base: bool | None = None


@dataclass(frozen=True)
class Verdict:
    """The grade of one completion: the extracted ``answer`` (or None), ``correct``, ``status``."""

    answer: str | None
    correct: bool
    status: str
    correct_base: bool | None = None
    """The verdict on the base subset of the tests (code benchmarks with one), else None."""


class Verifier(ABC):
    """Base class of verifiers. Instances must be picklable (they travel to worker processes)."""

    name: str = "verifier"
    #: The longest one check may run, where the verifier enforces its own limits (the code
    #: verifier's sandbox does); the pool's hard kill then waits at least this long. None: the
    #: caller's ``timeout_s`` is the limit.
    max_check_s: float | None = None

    @abstractmethod
    def extract(self, completion: str) -> str | None:
        """The final answer stated in ``completion``, or None."""

    @abstractmethod
    def equivalent(self, reference: str, answer: str) -> bool:
        """Whether ``answer`` matches ``reference``. May be slow; runs in a worker."""

    def check(self, reference: str, answer: str) -> CheckResult:
        """Grade ``answer`` against ``reference``; by default through :meth:`equivalent`."""
        return CheckResult(bool(self.equivalent(reference, answer)))

    def prepare(self) -> None:
        """Called once per batch in the calling process before any check: raise a one-line
        RlboundError for a missing prerequisite (the code verifier's sandbox) rather than let
        every check fail in a worker."""

    def has_base_subset(self, reference: str) -> bool:
        """Whether ``reference``'s tests have a base subset (then every verdict, an unanswered
        sample's included, carries ``correct_base``)."""
        return False

    def reference_for(self, problem: Any) -> str:
        """The reference string that answers to ``problem`` (a :class:`rlbound.tasks.base.Problem`)
        are graded against; callers that hold problems pass this to :func:`verify_batch`."""
        return problem.reference

    def normalise(self, answer: str) -> str:
        """The cache key form of an answer: answers with equal keys get the same verdict."""
        return " ".join(answer.split())

    def settings(self) -> dict[str, Any]:
        """Options that change verdicts, recorded in ``run.json``."""
        return {}


VerifierFactory = Callable[..., Verifier]
VERIFIERS: Registry[VerifierFactory] = Registry(
    "verifier",
    lazy={
        "math": "rlbound.verify.math",
        "exact": "rlbound.verify.exact",
        "code": "rlbound.verify.code",
        "countdown": "rlbound.lab.countdown",
        "qa": "rlbound.verify.qa",
        "qa-judge": "rlbound.verify.qa_judge",
    },
)
register_verifier = VERIFIERS.register


def verifier_options(name: str) -> list[str]:
    """The options (constructor keywords) the registered verifier ``name`` takes."""
    import inspect

    return [
        p.name for p in inspect.signature(VERIFIERS.get(name)).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def verifier_spec(verifier: Verifier) -> dict[str, Any]:
    """``{"name", "settings"}``, as run.json's ``config.verifier`` records it (JSON values, so it
    compares equal to what is read back)."""
    import json

    return json.loads(json.dumps({"name": verifier.name, "settings": verifier.settings()}))


def load_verifier(name: str, **options: Any) -> Verifier:
    """The registered verifier ``name`` built with ``options`` (its constructor's keywords); an
    unknown option is a one-line error listing the accepted ones."""
    from rlbound.errors import RlboundError

    accepted = verifier_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise RlboundError(
            f"verifier {name!r} has no option {unknown[0]!r}; its options: {', '.join(accepted) or 'none'}"
        )
    return VERIFIERS.get(name)(**options)
