"""Final-answer extraction and cache-key normalisation, shared by every text verifier.

:func:`extract_answer` finds the answer a completion commits to, trying these markers in order
and taking the *last* occurrence of the first marker that is present:

1. ``<answer>...</answer>`` tags (a ``\\boxed{}`` inside the tag wins over the tag's full text);
2. ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces (``\\boxed 5`` too);
3. GSM8K-style ``#### N`` lines;
4. "the answer is X" / "final answer: X" / "Final Answer: The final answer is $X$";
5. only when ``last_number_fallback=True``: the last number in the text. This is off by default
   because it turns rambling into answers; verifiers record the setting in ``run.json``.

:func:`normalise` rewrites an answer into its cache-key form. It is deliberately conservative:
it only removes what cannot change the meaning (math delimiters, ``\\left``/``\\right``, sizing
and spacing commands, ``\\dfrac``/``\\tfrac``, spaces that do not separate two letters or digits,
a trailing full stop). Answers with equal keys get the same verdict, so anything that *might*
change a verdict (units, ``\\%``, ``^\\circ``, case) is left to the verifier's ``equivalent``.

This module does not decide correctness and does not parse mathematics; it is pure string work,
cheap enough to run in the calling process for every sample.
"""

from __future__ import annotations

import re

__all__ = ["extract_answer", "last_boxed", "normalise"]

# \boxed or \fbox as a whole control word (not \boxedfoo).
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_GSM8K_RE = re.compile(r"^[ \t]*####[ \t]*(.+?)[ \t]*$", re.MULTILINE)
_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answer|\bthe\s+answer)[ \t]*(?:\*\*)?[ \t]*(?:is\b|:|=)[ \t]*(?:\*\*)?[ \t]*:?"
    r"[ \t]*(?P<rest>[^\n]*)",
    re.IGNORECASE,
)
# A number not glued to a word or to a decimal point on its left: 1,000 / -3 / 2.5 / 3/4.
_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?![\w])")
# Math spans at the start of a phrase: $$..$$, $..$, \(..\), \[..\].
_LEADING_MATH_RE = re.compile(
    r"^(?:\$\$(?P<a>.+?)\$\$|\$(?P<b>.+?)(?<!\\)\$|\\\((?P<c>.+?)\\\)|\\\[(?P<d>.+?)\\\])", re.DOTALL
)
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)|\bI hope\b", re.IGNORECASE)


def _braced_group(text: str, open_index: int) -> str | None:
    """Content of the brace group opening at ``text[open_index] == "{"``; None if unbalanced."""
    depth = 0
    i = open_index
    while i < len(text):
        char = text[i]
        if char == "\\":  # an escaped character (\{, \}, \\) never opens or closes a group
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : i]
        i += 1
    return None


def _boxed_content(text: str, after: int) -> str | None:
    """Content of a \\boxed whose control word ends at ``after``."""
    i = after
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        return _braced_group(text, i)
    # \boxed 5: the argument runs to the next space or math delimiter.
    match = re.match(r"[^\s$}]+", text[i:])
    return match.group(0) if match else None


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, or None.

    Braces are balanced, so ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``. A truncated final box
    (never closed) is skipped in favour of the previous complete one.
    """
    for match in reversed(list(_BOXED_RE.finditer(text))):
        content = _boxed_content(text, match.end())
        if content is not None and content.strip():
            return content.strip()
    return None


def _clean_phrase(rest: str) -> str | None:
    """The answer in the text that follows "the answer is": a math span, or up to the full stop."""
    rest = rest.strip().lstrip("*").strip()
    math = _LEADING_MATH_RE.match(rest)
    if math:
        value = next(group for group in math.groups() if group is not None)
    else:
        end = _SENTENCE_END_RE.search(rest)
        value = rest[: end.start()] if end else rest
    value = value.strip().rstrip("*").strip()
    return value or None


def _from_answer_tags(text: str) -> str | None:
    tags = _ANSWER_TAG_RE.findall(text)
    if not tags:
        return None
    content = tags[-1]
    boxed = last_boxed(content)
    if boxed is not None:
        return boxed
    content = content.strip()
    return content or None


def _from_answer_phrase(text: str) -> str | None:
    for match in reversed(list(_ANSWER_IS_RE.finditer(text))):
        rest = match.group("rest")
        # "Final Answer: The final answer is $X$": the phrase inside the phrase holds the answer.
        value = _from_answer_phrase(rest) if _ANSWER_IS_RE.search(rest) else None
        value = value if value is not None else _clean_phrase(rest)
        if value is not None:
            return value
    return None


def _from_gsm8k_marker(text: str) -> str | None:
    lines = _GSM8K_RE.findall(text)
    if not lines:
        return None
    value = lines[-1].strip().rstrip(".").strip()
    return value or None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def extract_answer(completion: str, *, last_number_fallback: bool = False) -> str | None:
    """The final answer stated in ``completion`` (see the module docstring for the rules), or None."""
    for finder in (_from_answer_tags, last_boxed, _from_gsm8k_marker, _from_answer_phrase):
        answer = finder(completion)
        if answer is not None:
            return answer
    if last_number_fallback:
        return _last_number(completion)
    return None


# --- normalisation -------------------------------------------------------------------------------

_DELIMITED_RE = re.compile(r"^(?:\\\((?P<a>.*)\\\)|\\\[(?P<b>.*)\\\])$", re.DOTALL)
_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")
# \left( -> (, \left. -> nothing; never touches \leftarrow or \rightarrow.
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![A-Za-z])\s*\.?")
_SIZING_RE = re.compile(r"\\(?:big|Big|bigg|Bigg)[lrm]?(?![A-Za-z])")
_FRAC_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")
_BINOM_RE = re.compile(r"\\[dt]binom(?![A-Za-z])")
_DISPLAYSTYLE_RE = re.compile(r"\\(?:displaystyle|textstyle)(?![A-Za-z])")
# Thin/medium/thick/negative spaces and quads are presentation only.
_SPACING_RE = re.compile(r"(?<!\\)\\(?:[,;:!]|q?quad(?![A-Za-z]))")
_TEXT_SPACE_RE = re.compile(r"(?<!\\)(?:\\ |~)")
# A space survives only between two letters/digits (``\pi x``, ``1 2``); elsewhere it is noise.
_REMOVABLE_SPACE_RE = re.compile(r"(?<![A-Za-z0-9]) +| +(?![A-Za-z0-9])")


def _strip_outer(text: str) -> str:
    text = text.strip()
    delimited = _DELIMITED_RE.match(text)
    if delimited:
        text = next(group for group in delimited.groups() if group is not None).strip()
    text = _UNESCAPED_DOLLAR_RE.sub("", text).strip()
    while text.endswith(".") and not text.endswith("\\."):
        text = text[:-1].rstrip()
    return text


def normalise(answer: str) -> str:
    """The cache-key form of ``answer``: equal keys are certainly equivalent answers.

    >>> normalise(r"$\\left( 1, \\dfrac{1}{2} \\right)$.")
    '(1,\\\\frac{1}{2})'
    """
    text = _strip_outer(answer)
    text = _LEFT_RIGHT_RE.sub("", text)
    text = _SIZING_RE.sub("", text)
    text = _FRAC_RE.sub(r"\\frac", text)
    text = _BINOM_RE.sub(r"\\binom", text)
    text = _DISPLAYSTYLE_RE.sub(" ", text)
    text = _SPACING_RE.sub(" ", text)
    text = _TEXT_SPACE_RE.sub(" ", text)
    text = " ".join(text.split())
    text = _REMOVABLE_SPACE_RE.sub("", text)
    return _strip_outer(text)
