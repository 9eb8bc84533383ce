"""Answer extraction and cache-key normalisation (pure string work, no sympy): one group of
cases per rule of rlbound.verify.extract, each with the wrong answers that look right."""

from __future__ import annotations

import pytest

from rlbound.verify.extract import extract_answer, last_boxed, normalise


def _cases(*pairs: tuple[str, str | None]):
    return pytest.mark.parametrize("completion, expected", list(pairs))


# --- rule 1: <answer> tags -------------------------------------------------------------------------


@_cases(
    ("<think>maybe 3</think><answer> 12 </answer>", "12"),
    (r"<answer>it is \boxed{4}</answer> \boxed{9}", "4"),  # the tag wins, the box inside it
    ("<answer>3</answer> on second thought <answer>5</answer>", "5"),  # the last tag
    ("<answer>The answer is 7.</answer>", "7"),  # the rules apply inside the tag
)
def test_answer_tags(completion: str, expected: str) -> None:
    assert extract_answer(completion) == expected


# --- rule 2: boxes -------------------------------------------------------------------------------


@_cases(
    (r"so $\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),  # nested braces
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
    (r"\fbox{7}.", "7"),
    (r"\boxed 5 is it", "5"),
    (r"\boxed{ x = 3 }", "x = 3"),
    (r"\boxed{2} ... and then \boxed{3", "2"),  # a truncated last box is skipped
    (r"\boxed{\boxed{6}}", r"\boxed{6}"),  # a box inside a box is part of it
    # Boxes in the final sentence form one list answer.
    (r"The roots are $\boxed{-2}$ and $\boxed{1}$.", "-2, 1"),
    (r"\[ \boxed{(1, 2)}, \boxed{(2, 1)} \]", "(1, 2), (2, 1)"),
    (r"$\boxed{2} \quad \text{and} \quad \boxed{3}$", "2, 3"),
    (r"\( y_1 = \boxed{x+1} \) and \( y_2 = \boxed{x-1} \)", "x+1, x-1"),
    (r"so \boxed{4}, that is \boxed{4}", "4"),  # a repeated box is one answer
    # A box earlier in the working is superseded by the final sentence's.
    (r"first \boxed{3}, then \boxed{4}. Final: \boxed{5}", "5"),
    ("Step one gives \\boxed{200}\nStep two gives \\boxed{255}", "255"),
)
def test_boxes(completion: str, expected: str) -> None:
    assert extract_answer(completion) == expected


def test_last_boxed() -> None:
    assert last_boxed("no box") is None
    assert last_boxed(r"\boxedx{3}") is None  # a different control word
    assert last_boxed(r"\boxed{1} and \boxed{2}") == "2"


# --- rule 2: "final answer" statements -----------------------------------------------------------


@_cases(
    (r"Final Answer: The final answer is $\frac{3}{4}$. I hope it is correct.", r"\frac{3}{4}"),
    ("Final Answer: The final answer is 120. I hope it is correct.", "120"),
    ("Final Answer: The final answer is $10,455$. I hope it is correct.", "10,455"),
    ("**Final Answer:** 3.5", "3.5"),
    ("The final answer is: **42**", "42"),
    # A sentence after "Final Answer:" gives its answer-like span, never the whole sentence.
    ("Final Answer: The volume of $ABCD$ is 120. I hope it is correct.", "120"),
    ("Final Answer: Jane started growing the sphere 3 hours ago. I hope it is correct.", "3"),
    ("Final Answer: The sides are 3 cm and 4 cm long, so I am done.", None),  # nothing answer-like
    # A heading with the answer on the next line.
    ("## Final Answer\n$17$", "17"),
    # A final statement after boxes in the working supersedes them (Minerva's format).
    (r"so $\boxed{200}$ and later $\boxed{255}$. Final Answer: The final answer is $455$.", "455"),
    # ... and a later box supersedes an earlier final statement.
    ("Final answer: 3\nWait, that is wrong. Correcting: \\boxed{4}", "4"),
)
def test_final_answer_statements(completion: str, expected: str | None) -> None:
    assert extract_answer(completion) == expected


def test_final_answer_in_prose_is_no_marker() -> None:
    # "final answer" used in a sentence without "is"/":" is not a statement of the answer.
    assert extract_answer("To get the final answer we add 3 and 4 and 9 together.") is None
    assert extract_answer("The final answer is going to be larger than we think.") is None


# --- rule 2: answer lines and #### ---------------------------------------------------------------


@_cases(
    ("She makes 13 * 2 = $<<13*2=26>>26\nA: 26", "26"),
    ("Work here.\nAnswer: 26", "26"),
    ("Work here.\n**Answer:** $26", "$26"),  # the currency sign goes in normalise
    ("Work here.\nA: 26 dollars\n", "26 dollars"),
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
    ("steps\n#### 1,234\n", "1,234"),
)
def test_answer_lines(completion: str, expected: str) -> None:
    assert extract_answer(completion) == expected


def test_answer_line_only_counts_as_the_last_line() -> None:
    # "A:" in the middle of the working is a label, not the final answer.
    assert extract_answer("A: 3 apples\nB: 4 apples\nso we compare them") is None
    # Lower-case variable assignments are not answer lines.
    assert extract_answer("a=3\nb=a*2") is None


# --- rule 3: "the answer is" ---------------------------------------------------------------------


@_cases(
    ("The answer is 5. I hope it is right.", "5"),
    ("So the answer is: 17", "17"),
    ("the answer is $x = 2$.", "x = 2"),
    # Weaker than a box: working that says "the answer is" does not override the box.
    (r"so \boxed{12}. Then the answer is bigger than 10 in any case.", "12"),
)
def test_answer_is(completion: str, expected: str) -> None:
    assert extract_answer(completion) == expected


# --- rule 4: tool output -------------------------------------------------------------------------


def test_tool_output_block() -> None:
    tir = "```python\nprint(2 + 3)\n```\n```output\n5\n```\n{}"
    assert extract_answer(tir.format("Five cars drove through in the first 15 minutes.")) == "5"
    # A marker in the prose wins over the printed output.
    assert extract_answer(tir.format(r"So the total is $\boxed{6}$.")) == "6"
    # A multi-line or long output is not an answer.
    assert extract_answer("```output\n1\n2\n```\nDone.") is None
    assert extract_answer("```output\nTraceback (most recent call last): an error here\n```") is None


# --- no answer, and the last-number fallback -----------------------------------------------------


@pytest.mark.parametrize("completion", ["", "I am not sure.", "The value is 3 or 4", r"\boxed{}", r"\boxed{3"])
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


# --- normalisation -------------------------------------------------------------------------------


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
        (r"\displaystyle x = 3", "x=3"),
        (r"\$5", "5"),  # currency
        ("$\\$1.50$", "1.50"),
    ],
)
def test_normalise(answer: str, key: str) -> None:
    assert normalise(answer) == key


@pytest.mark.parametrize(
    "answer, key",
    [
        ("1,000", "1000"),
        ("12,345.5", "12345.5"),
        ("1,234,567", "1234567"),
        (r"1{,}000", "1000"),
        (r"900,\!000,\!000", "900000000"),  # MATH's LaTeX separator
        (r"11,\! 111,\! 100", "11111100"),
        (r"1\,000", "1000"),  # a thin space, when the whole answer is the number
        ("1 000", "1000"),
        ("x = 10,000", "x=10000"),
    ],
)
def test_thousands_separators_are_removed(answer: str, key: str) -> None:
    assert normalise(answer) == key


@pytest.mark.parametrize(
    "answer, key",
    [
        ("32, 349", "32, 349"),  # a list of two numbers, never 32349
        ("3, 5", "3,5"),  # never 35
        ("1,23", "1,23"),  # not groups of three
        ("1,0000", "1,0000"),
        ("(12,102)", "(12, 102)"),  # inside brackets a comma separates coordinates
        (r"(2,12) \cup (12,102)", r"(2,12)\cup(12, 102)"),
        ("1 2", "1 2"),  # not a thousands group
    ],
)
def test_lists_stay_lists(answer: str, key: str) -> None:
    assert normalise(answer) == key


@pytest.mark.parametrize(
    "answer, key",
    [
        ("10 weeks", "10"),
        (r"5 \text{ cm}", "5"),
        ("5 \\mbox{square feet}", "5"),
        ("12 km/h", "12"),
        ("3.5 cm^2", "3.5"),
        (r"90^\circ", "90"),
        (r"90^{\circ}", "90"),
        ("45°", "45"),
        ("30 degrees", "30"),
        ("50%", r"50\%"),
        ("50 percent", r"50\%"),
        ("250 mL", "250"),  # a known capitalised abbreviation
    ],
)
def test_units_and_degrees_dropped(answer: str, key: str) -> None:
    assert normalise(answer) == key


@pytest.mark.parametrize(
    "answer",
    [
        "3 million",  # a multiplier, not a unit
        "3 or more",
        "2 and 3",
        "5 x",  # a product with a variable
        "2 pi",
        "x cm",  # not a number before it
        "4Wt gddL",  # capitalised words that are no known unit (a tiny model's noise)
    ],
)
def test_words_that_change_meaning_are_kept(answer: str) -> None:
    key = normalise(answer)
    assert key != normalise(answer.split()[0])


def test_exact_answers_keep_their_units() -> None:
    # Synthetic tasks' answers have no units: "4 abc" is not the answer 4.
    assert normalise("4 abc", units=False) != normalise("4")
    assert normalise(r"90^\circ", units=False) != normalise("90")
    assert normalise("1,000", units=False) == "1000"  # everything else is as with units


def test_normalise_keeps_meaningful_differences() -> None:
    assert normalise("12") != normalise("21")
    assert normalise("(1,2]") != normalise("[1,2]")
    assert normalise(r"10\%") != normalise("10")  # left to the verifier, never merged in the key
    assert normalise("X") != normalise("x")
