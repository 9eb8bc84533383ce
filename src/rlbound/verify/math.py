"""The "math" verifier: answer extraction (:mod:`rlbound.verify.extract`) + Math-Verify equivalence.

``equivalent(reference, answer)`` parses both sides with Math-Verify (``math_verify.parse``) and
compares them with ``math_verify.verify(gold, answer)`` (gold first: the comparison is not
symmetric). Both strings are wrapped as ``\\boxed{...}`` so Math-Verify reads them as LaTeX (its
``LatexExtractionConfig`` normalises units, ``\\text``, ``\\dfrac``, ``^\\circ``, boxed content) and
falls back to plain expressions (``ExprExtractionConfig``) and finally to string comparison. This
handles fractions vs decimals, intervals, ``x = 3`` vs ``3``, units, sets and tuples. Answers whose
normalised forms are equal are accepted without calling sympy. Parsed references are cached per
process, since one reference is compared with many distinct answers.

What it does not do:

* It does not bound its own running time. Math-Verify's timeouts use ``signal.alarm``, which only
  works on a main thread and turns a timeout into ``False``; they are disabled here
  (``parsing_timeout=None``, ``timeout_seconds=None``). Some answers (``9^{9^{9}}``) make sympy
  run for hours, so call ``equivalent`` through :func:`rlbound.verify.pool.verify_batch` (or
  :func:`rlbound.verify.pool.verify_math`), whose workers are killed at a hard wall-clock limit.
* It does not implement Qwen-style ``math_equal``; Math-Verify's tolerances (``float_rounding``,
  ``numeric_precision``) are recorded in ``settings()``.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from rlbound.verify.base import Verifier, register_verifier
from rlbound.verify.extract import extract_answer, normalise

__all__ = ["MathVerifier"]


class _DropTimeoutDisabledWarning(logging.Filter):
    """Math-Verify warns once per process that its (signal) timeout is off; that is on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


@lru_cache(maxsize=1)
def _math_verify_version() -> str:
    try:
        return version("math-verify")
    except PackageNotFoundError:  # pragma: no cover - installed as a dependency
        return "unknown"


@lru_cache(maxsize=None)
def _extraction_config() -> tuple:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


def _parse(text: str) -> list:
    """Math-Verify's parse of ``text`` read as a boxed LaTeX answer (no signal timeout)."""
    from math_verify import parse
    from math_verify.errors import TimeoutException

    try:
        return parse("\\boxed{" + text + "}", extraction_config=_extraction_config(), parsing_timeout=None)
    except TimeoutException as exc:  # a BaseException: only if a timeout was configured somewhere
        raise TimeoutError("Math-Verify parsing timed out") from exc


@lru_cache(maxsize=4096)
def _parse_reference(reference: str) -> list:
    return _parse(reference)


# Touch the common comparison paths: numbers, equations, intervals, sets, symbolic expressions.
_WARM_UP_PAIRS = (
    (r"\frac{1}{2}", "0.5"),
    ("x=3", "3"),
    ("(1,2]", "[1,2]"),
    (r"\{1,2\}", r"\{2,1\}"),
    (r"\sqrt{2}+x", "x+2^{1/2}"),
)


@register_verifier("math")
class MathVerifier(Verifier):
    """Extract the final answer; compare with the reference using Math-Verify.

    Args:
        last_number_fallback: when no answer marker is found, take the last number in the text.
            Off by default (it rewards rambling); recorded in ``settings()``.
        float_rounding, numeric_precision, strict: passed to ``math_verify.verify``.
    """

    name = "math"
    cheap = False
    #: Modules a worker process should import before its first check (see the pool).
    preload_modules = ("math_verify",)

    def __init__(
        self,
        last_number_fallback: bool = False,
        float_rounding: int = 6,
        numeric_precision: int = 15,
        strict: bool = True,
    ):
        self.last_number_fallback = bool(last_number_fallback)
        self.float_rounding = int(float_rounding)
        self.numeric_precision = int(numeric_precision)
        self.strict = bool(strict)

    def extract(self, completion: str) -> str | None:
        return extract_answer(completion, last_number_fallback=self.last_number_fallback)

    def normalise(self, answer: str) -> str:
        return normalise(answer)

    def equivalent(self, reference: str, answer: str) -> bool:
        if normalise(reference) == normalise(answer):
            return True
        from math_verify import verify
        from math_verify.errors import TimeoutException

        gold = _parse_reference(reference)
        target = _parse(answer)
        if not gold or not target:
            return False
        try:
            return bool(
                verify(
                    gold,
                    target,
                    float_rounding=self.float_rounding,
                    numeric_precision=self.numeric_precision,
                    strict=self.strict,
                    timeout_seconds=None,
                )
            )
        except TimeoutException as exc:
            raise TimeoutError("Math-Verify comparison timed out") from exc

    def warm_up(self) -> None:
        """Run a few checks so sympy's and the LaTeX parser's lazy set-up is paid up front.

        The pool calls this once per worker, before the time limit of the first real check starts.
        """
        for reference, answer in _WARM_UP_PAIRS:
            self.equivalent(reference, answer)

    def settings(self) -> dict[str, Any]:
        return {
            "verifier": self.name,
            "backend": f"math-verify {_math_verify_version()}",
            "last_number_fallback": self.last_number_fallback,
            "float_rounding": self.float_rounding,
            "numeric_precision": self.numeric_precision,
            "strict": self.strict,
        }


if os.environ.get("RLBOUND_VERIFY_WARM_UP") == "1":
    # Imported by the verification pool's forkserver (see rlbound.verify.pool.WARM_UP_ENV): pay
    # the lazy set-up once here so that every worker forked from it starts warm.
    MathVerifier().warm_up()
