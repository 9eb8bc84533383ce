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
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from rlbound.errors import RlboundError
from rlbound.verify.base import Verifier, register_verifier
from rlbound.verify.exact import parse_number
from rlbound.verify.extract import RULES_VERSION, extract_answer, normalise

__all__ = ["PERCENT_MODES", "MathVerifier", "percent_readings"]


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


PERCENT_MODES = ("both", "value", "fraction")
_PERCENT_SUFFIX = "\\%"


def _without_percent(key: str) -> str | None:
    """The number before a trailing ``\\%`` in a normalised answer, or None."""
    if not key.endswith(_PERCENT_SUFFIX):
        return None
    value = key[: -len(_PERCENT_SUFFIX)].strip()
    return value if parse_number(value) is not None else None


def _hundredth(value: str) -> str:
    number = parse_number(value)
    assert number is not None
    number /= 100
    return str(number.numerator) if number.denominator == 1 else f"{number.numerator}/{number.denominator}"


def _is_fraction(key: str) -> bool:
    number = parse_number(key)
    return number is not None and number.denominator != 1


def percent_readings(reference: str, answer: str, mode: str = "both") -> list[tuple[str, str]]:
    """The (reference, answer) pairs to compare when either side is a percentage.

    Math-Verify reads ``50\\%`` as 0.5 only. Here, in mode ``"both"``, ``50%`` equals ``50``
    and, when the other side is a non-integer number (a fraction such as ``0.5`` or ``1/2``),
    ``0.5``: graders of word problems accept either, and a percentage never equals an integer
    100 times smaller (``200%`` is not ``2``). Mode ``"value"`` keeps only the first reading,
    ``"fraction"`` only the second. Keys without a percentage are compared as they are.
    """
    reference_value, answer_value = _without_percent(reference), _without_percent(answer)
    if reference_value is None and answer_value is None:
        return [(reference, answer)]
    if reference_value is not None and answer_value is not None:
        return [(reference_value, answer_value)]
    readings = []
    if answer_value is not None:
        if mode != "fraction":
            readings.append((reference, answer_value))
        if mode != "value" and (_is_fraction(reference) or mode == "fraction"):
            readings.append((reference, _hundredth(answer_value)))
    else:
        if mode != "fraction":
            readings.append((reference_value, answer))
        if mode != "value" and (_is_fraction(answer) or mode == "fraction"):
            readings.append((_hundredth(reference_value), answer))
    return readings


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
        percent: what a percentage equals (see :func:`percent_readings`): ``"both"`` (default:
            ``50%`` equals ``50``, and ``0.5`` when the other side is a non-integer number),
            ``"value"`` (only ``50``) or ``"fraction"`` (only ``0.5``).
        set_relations: let a relation match the set it describes (``-2 \\le x \\le 7`` equals
            ``x \\in [-2, 7]``); Math-Verify's ``allow_set_relation_comp``.
    """

    name = "math"
    cheap = False

    def __init__(
        self,
        last_number_fallback: bool = False,
        float_rounding: int = 6,
        numeric_precision: int = 15,
        strict: bool = True,
        percent: str = "both",
        set_relations: bool = True,
    ):
        if percent not in PERCENT_MODES:
            raise RlboundError(f"math verifier: percent must be one of {', '.join(PERCENT_MODES)}, got {percent!r}")
        self.last_number_fallback = bool(last_number_fallback)
        self.float_rounding = int(float_rounding)
        self.numeric_precision = int(numeric_precision)
        self.strict = bool(strict)
        self.percent = percent
        self.set_relations = bool(set_relations)

    def extract(self, completion: str) -> str | None:
        return extract_answer(completion, last_number_fallback=self.last_number_fallback)

    def normalise(self, answer: str) -> str:
        return normalise(answer)

    def equivalent(self, reference: str, answer: str) -> bool:
        reference_key, answer_key = normalise(reference), normalise(answer)
        if reference_key == answer_key:
            return True
        return any(
            self._math_verify_equal(gold, target)
            for gold, target in percent_readings(reference_key, answer_key, self.percent)
        )

    def _math_verify_equal(self, reference: str, answer: str) -> bool:
        if reference == answer:
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
                    allow_set_relation_comp=self.set_relations,
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
            "rules": RULES_VERSION,
            "backend": f"math-verify {_math_verify_version()}",
            "last_number_fallback": self.last_number_fallback,
            "float_rounding": self.float_rounding,
            "numeric_precision": self.numeric_precision,
            "strict": self.strict,
            "percent": self.percent,
            "set_relations": self.set_relations,
        }

