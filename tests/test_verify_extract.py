"""Answer extraction and cache-key normalisation (pure string work, no sympy)."""

from __future__ import annotations

import pytest

from rlbound.verify.extract import extract_answer, last_boxed, normalise


@pytest.mark.parametrize(
    "completion, expected",
    [
        (r"so $\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),  # nested braces
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
        (r"first \boxed{3}, then \boxed{4}. Final: \boxed{5}", "5"),  # several boxes: the last
        (r"\fbox{7}.", "7"),
        (r"\boxed 5 is it", "5"),
        (r"\boxed{ x = 3 }", "x = 3"),
        (r"\boxed{2} ... and then \boxed{3", "2"),  # truncated last box is skipped
        ("<think>maybe 3</think><answer> 12 </answer>", "12"),
        (r"<answer>it is \boxed{4}</answer> \boxed{9}", "4"),  # the tag wins, boxed inside it
        ("The answer is 5. I hope it is right.", "5"),
        ("So the answer is: 17", "17"),
        (r"Final Answer: The final answer is $\frac{3}{4}$. I hope it is correct.", r"\frac{3}{4}"),
        ("**Final Answer:** 3.5", "3.5"),
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
        ("steps\n#### 1,234\n", "1,234"),
    ],
)
def test_extracts_final_answer(completion: str, expected: str) -> None:
    assert extract_answer(completion) == expected


@pytest.mark.parametrize(
    "completion",
    ["", "I am not sure.", "The value is 3 or 4", r"\boxed{}", r"\boxed{3"],
)
def test_no_answer_is_none(completion: str) -> None:
    assert extract_answer(completion) is None


def test_last_number_fallback_is_off_by_default() -> None:
    text = "We add 12 and 30 to get 42 apples"
    assert extract_answer(text) is None
    assert extract_answer(text, last_number_fallback=True) == "42"
    assert extract_answer("so x-3.5 is it", last_number_fallback=True) == "3.5"
    assert extract_answer("no digits here", last_number_fallback=True) is None
    # A marker always wins over the fallback.
    assert extract_answer(r"\boxed{7} after 99 tries", last_number_fallback=True) == "7"


def test_last_boxed_none_without_box() -> None:
    assert last_boxed("no box") is None
    assert last_boxed(r"\boxedx{3}") is None  # a different control word


@pytest.mark.parametrize(
    "answer, key",
    [
        ("  42 ", "42"),
        ("$42$", "42"),
        ("42.", "42"),
        (r"\(3\)", "3"),
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),
        (r"\tfrac12", r"\frac12"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
        (r"x \rightarrow 3", r"x\rightarrow 3"),  # \rightarrow is not \right
        (r"\pi x", r"\pi x"),  # a space between letters is meaningful
        (r"1\,000", "1 000"),
        (r"\displaystyle x = 3", "x=3"),
        (r"5 \text{ cm}", r"5\text{cm}"),
        (r"\$5", r"\$5"),  # an escaped dollar is content, not a delimiter
    ],
)
def test_normalise(answer: str, key: str) -> None:
    assert normalise(answer) == key


def test_normalise_keeps_meaningful_differences() -> None:
    assert normalise("12") != normalise("21")
    assert normalise("(1,2]") != normalise("[1,2]")
    assert normalise(r"10\%") != normalise("10")  # left to the verifier, never merged in the key
    assert normalise("X") != normalise("x")
