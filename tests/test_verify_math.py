"""Equivalence of the "math" (Math-Verify) and "exact" verifiers, called in-process."""

from __future__ import annotations

import pytest

from rlbound.verify import ExactVerifier, MathVerifier, load_verifier, verify_batch, verify_math
from rlbound.verify.exact import parse_number
from rlbound.verify.extract import normalise


@pytest.fixture(scope="module")
def math_verifier() -> MathVerifier:
    return MathVerifier()


@pytest.mark.parametrize(
    "reference, answer",
    [
        (r"\frac{1}{2}", "0.5"),
        ("0.5", r"\frac{1}{2}"),
        (r"\frac{1}{2}", r"\dfrac{1}{2}"),
        (r"\frac{3}{4}", "3/4"),
        ("(1,2]", "(1, 2]"),
        (r"[-2,7]", r"\left[ -2, 7 \right]"),
        ("3", "x = 3"),
        ("x=3", "3"),
        ("5", r"5 \text{ cm}"),
        (r"5\text{ cm}", "5"),
        ("1000", "1,000"),
        ("32", "32.0"),
        (r"\sqrt{2}", "2^{1/2}"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi/2)"),
        ("90^\\circ", "90"),
        ("x^2+1", "1+x^2"),
        (r"\text{Evelyn}", "Evelyn"),
        ("10", "10 weeks"),  # plain-text units
        ("16386.20", r"\$16,\!386.20"),
        ("32349", r"32,\! 349"),
        (r"10{,}000", "10000"),
        ("1,-2", "-2, 1"),  # a list in another order
        (r"(2, 12) \cup (12, 102)", r"(2,12) \cup (12,102)"),
        (r"x \in [-2,7]", r"-2 \le x \le 7"),  # a relation and the set it describes
        ("50", r"50.0\%"),  # percent against a bare number, both ways
        ("0.35", r"35\%"),
        (r"35\%", "35"),
        (r"35\%", "0.35"),
    ],
)
def test_math_equivalent(math_verifier: MathVerifier, reference: str, answer: str) -> None:
    assert math_verifier.equivalent(reference, answer) is True
    # The pool checks the cache-key form of the answer: it must get the same verdict.
    assert math_verifier.equivalent(reference, normalise(answer)) is True


@pytest.mark.parametrize(
    "reference, answer",
    [
        (r"\frac{1}{3}", "0.33"),
        ("12", "21"),
        ("(1,2]", "[1,2]"),
        ("(1,2]", "(1,2)"),
        (r"\frac{\sqrt{3}}{2}", "0.866"),
        ("x^2+1", "x^2-1"),
        ("3", "-3"),
        (r"\pi", "3.14"),
        ("32349", "32, 349"),  # a list is not a number with a thousands separator
        ("35", "3, 5"),
        ("12102", "(12,102)"),
        ("2", r"200\%"),  # a percentage never equals an integer 100 times smaller
        ("25", r"40\%"),
        ("0.5", "50"),  # without a percent sign there is no percent reading
        ("1", "-[0,1)"),
        ("5", "3 or more"),
    ],
)
def test_math_not_equivalent(math_verifier: MathVerifier, reference: str, answer: str) -> None:
    assert math_verifier.equivalent(reference, answer) is False
    assert math_verifier.equivalent(reference, normalise(answer)) is False


@pytest.mark.parametrize(
    "mode, reference, answer, expected",
    [
        ("value", "50", r"50\%", True),
        ("value", "0.5", r"50\%", False),
        ("fraction", "0.5", r"50\%", True),
        ("fraction", "50", r"50\%", False),
    ],
)
def test_percent_modes(mode: str, reference: str, answer: str, expected: bool) -> None:
    assert MathVerifier(percent=mode).equivalent(reference, answer) is expected
    assert MathVerifier(percent=mode).settings()["percent"] == mode


def test_percent_mode_is_checked() -> None:
    from rlbound.errors import RlboundError

    with pytest.raises(RlboundError, match="percent must be one of"):
        MathVerifier(percent="sometimes")


def test_settings_record_rules_version() -> None:
    from rlbound.verify.extract import RULES_VERSION

    assert load_verifier("math").settings()["rules"] == RULES_VERSION
    assert load_verifier("exact").settings()["rules"] == RULES_VERSION


def test_math_registered_and_settings_record_fallback() -> None:
    default = load_verifier("math")
    assert isinstance(default, MathVerifier)
    assert default.settings()["last_number_fallback"] is False
    assert default.settings()["backend"].startswith("math-verify")
    fallback = load_verifier("math", last_number_fallback=True)
    assert fallback.settings()["last_number_fallback"] is True
    assert default.extract("so we get 42") is None
    assert fallback.extract("so we get 42") == "42"


def test_verify_math_end_to_end() -> None:
    verdict = verify_math(r"\frac{1}{2}", r"Halving gives $\boxed{0.5}$.")
    assert (verdict.answer, verdict.correct, verdict.status) == ("0.5", True, "ok")
    wrong = verify_math("12", r"\boxed{21}")
    assert (wrong.correct, wrong.status) == (False, "ok")
    missing = verify_math("12", "I give up")
    assert (missing.answer, missing.correct, missing.status) == (None, False, "no_answer")


@pytest.mark.parametrize(
    "reference, answer, expected",
    [
        ("32", "32.0", True),
        ("1000", "1,000", True),
        ("0.5", "1/2", True),
        ("0.5", r"\frac{1}{2}", True),
        ("-3", "-3.00", True),
        ("1000", "1e3", True),
        ("abc", " abc ", True),
        ("32", "33", False),
        ("1/3", "0.333", False),
        ("abc", "ABC", False),
        ("3", "x = 3", False),  # exact is not symbolic
        ("4", "4 abc", False),  # no units in exact answers
        ("4", "4Wt~gddL", False),
        ("1e999999999", "1e999999998", False),  # huge exponents are compared as strings, fast
    ],
)
def test_exact_equivalence(reference: str, answer: str, expected: bool) -> None:
    assert ExactVerifier().equivalent(reference, answer) is expected


def test_exact_case_insensitive_option() -> None:
    assert ExactVerifier(case_sensitive=False).equivalent("abc", "ABC") is True


def test_parse_number() -> None:
    assert parse_number("1,234.5") == parse_number("1234.50")
    assert parse_number("12,34") is None  # not a thousands separator
    assert parse_number("1/0") is None
    assert parse_number(".") is None
    assert parse_number("x") is None


def test_exact_batch_grades_statuses() -> None:
    verdicts = verify_batch(
        "exact",
        ["32", "32", "32"],
        [r"\boxed{32.0}", "#### 31", "no idea"],
        timeout_s=1.0,
        progress_label="verifying",
    )
    assert [(v.correct, v.status) for v in verdicts] == [
        (True, "ok"),
        (False, "ok"),
        (False, "no_answer"),
    ]
