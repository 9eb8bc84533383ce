"""The "exact" verifier: same answer extraction as "math", then string or exact numeric equality.

Meant for synthetic tasks whose answers are short canonical strings or numbers. An answer is
correct when its normalised form (:func:`rlbound.verify.extract.normalise`) equals the reference's,
or when both read as numbers with the same exact rational value: ``32`` = ``32.0``,
``1,000`` = ``1000``, ``1/2`` = ``0.5`` = ``\\frac{1}{2}``, ``+3`` = ``3``, ``1e3`` = ``1000``.

What it does not do: no symbolic algebra, no tolerances (``0.333`` is not ``1/3``), no units, no
case folding unless ``case_sensitive=False``. It is cheap and bounded (exponents are capped so
``1e999999999`` is compared as a string, never expanded), so the pool runs it inline, with no
worker processes.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from rlbound.verify.base import Verifier, register_verifier
from rlbound.verify.extract import RULES_VERSION, extract_answer, normalise

__all__ = ["ExactVerifier", "parse_number"]

_MAX_EXPONENT = 1000
_DECIMAL_RE = re.compile(
    r"^(?P<sign>[+-]?)(?P<int>\d{1,3}(?:,\d{3})+|\d*)(?P<frac>\.\d*)?(?:[eE](?P<exp>[+-]?\d+))?$"
)
_RATIO_RE = re.compile(r"^(?P<sign>[+-]?)(?P<num>\d+)/(?P<den>\d+)$")
_LATEX_FRAC_RE = re.compile(r"^(?P<sign>[+-]?)\\frac\{(?P<num>\d+)\}\{(?P<den>\d+)\}$")


def parse_number(text: str) -> Fraction | None:
    """The exact value of ``text`` if it is a plain number (decimal, ratio, ``\\frac``), else None."""
    text = text.strip()
    for pattern in (_RATIO_RE, _LATEX_FRAC_RE):
        match = pattern.match(text)
        if match:
            if int(match["den"]) == 0:
                return None
            value = Fraction(int(match["num"]), int(match["den"]))
            return -value if match["sign"] == "-" else value
    match = _DECIMAL_RE.match(text)
    if not match:
        return None
    digits = match["int"].replace(",", "")
    fraction = match["frac"] or ""
    if not digits and len(fraction) <= 1:  # "", ".", "e5": no digits at all
        return None
    exponent = int(match["exp"]) if match["exp"] else 0
    if abs(exponent) > _MAX_EXPONENT:
        return None
    value = Fraction(f"{digits or '0'}{fraction if len(fraction) > 1 else ''}") * Fraction(10) ** exponent
    return -value if match["sign"] == "-" else value


@register_verifier("exact")
class ExactVerifier(Verifier):
    """Normalised string equality, or exact numeric equality when both sides are numbers.

    Args:
        last_number_fallback: when no answer marker is found, take the last number in the text.
        case_sensitive: compare strings case-sensitively (default True).
    """

    name = "exact"
    cheap = True  # runs inline in the calling process: no pool, no start-up cost

    def __init__(self, last_number_fallback: bool = False, case_sensitive: bool = True):
        self.last_number_fallback = bool(last_number_fallback)
        self.case_sensitive = bool(case_sensitive)

    def extract(self, completion: str) -> str | None:
        return extract_answer(completion, last_number_fallback=self.last_number_fallback)

    def normalise(self, answer: str) -> str:
        key = normalise(answer, units=False)
        return key if self.case_sensitive else key.casefold()

    def equivalent(self, reference: str, answer: str) -> bool:
        ref_key, answer_key = self.normalise(reference), self.normalise(answer)
        if ref_key == answer_key:
            return True
        ref_value, answer_value = parse_number(ref_key), parse_number(answer_key)
        return ref_value is not None and ref_value == answer_value

    def settings(self) -> dict[str, Any]:
        return {
            "verifier": self.name,
            "rules": RULES_VERSION,
            "last_number_fallback": self.last_number_fallback,
            "case_sensitive": self.case_sensitive,
        }
