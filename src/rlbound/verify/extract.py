"""Final-answer extraction and cache-key normalisation, shared by every text verifier.

:func:`extract_answer` finds the answer a completion commits to. The rules, in order:

=====  ==============  =========================================================================
order  rule            what it reads, and why
=====  ==============  =========================================================================
1      ``answer_tag``  The last ``<answer>...</answer>``. Rules 2 and 3 apply inside it; if
                       neither finds anything, its whole text is the answer. Prompts that ask
                       for tags (R1-style) put nothing else there.
2      final marker    Of the markers below, the one that *starts last* in the text wins, so a
                       box in the working is superseded by a later final statement and a final
                       statement by a later box.

                       * ``boxed``: the last complete ``\\boxed{}`` / ``\\fbox{}`` (braces
                         balanced; a truncated box is skipped) together with the boxes before it
                         in the same line and sentence; several boxes become one list answer
                         (``\\boxed{1}, \\boxed{2}`` -> ``1, 2``), repeats dropped.
                       * ``final_answer``: "final answer is X", "Final Answer: X", or a "Final
                         Answer" heading whose next line holds X (Minerva's "Final Answer: The
                         final answer is $X$. I hope it is correct." reads as X).
                       * ``answer_line``: the last non-empty line is ``A: X``, ``Answer: X`` or
                         ``**Answer:** X`` (the GSM8K few-shot format).
                       * ``hash_line``: a ``#### X`` line (GSM8K's reference format).
3      ``answer_is``   "the answer is X" (its last occurrence). Weaker than rule 2, because
                       working often says "the answer is ..." about an intermediate step.
4      ``tool_output`` The last ````` ```output ````` block, when it holds one short line: in
                       tool-integrated reasoning (ToRA, Qwen2.5-Math TIR) the program's printed
                       result is the answer when the prose after it states none.
5      last number     Only with ``last_number_fallback=True``: the last number in the text.
                       Off by default, because it turns rambling into answers; verifiers record
                       the setting in ``run.json``.
=====  ==============  =========================================================================

X is never a whole sentence. From the text after a marker (up to the end of its sentence or
line) the answer is: a leading math span (``$..$``, ``\\(..\\)``, ``\\[..\\]``); else the text
itself if it is answer-like (short, at most two words: ``10 weeks``, ``x = 3``, ``no solution``);
else in a sentence ("The volume of $ABCD$ is 120"), the answer-like span after its last "is",
"are", "was", "equals" or "="; else its only math span; else its only number; else nothing.

:func:`normalise` rewrites an answer into its cache-key form without changing its meaning:

* math delimiters, ``\\$``, ``\\left``/``\\right``, sizing and spacing commands, ``\\displaystyle``,
  ``\\dfrac``/``\\tfrac`` and a trailing full stop are dropped;
* thousands separators are removed only where that is what they are: ``1,000``, ``1{,}000`` and
  ``12,345.5`` (groups of three digits, no space), and ``1 000`` / ``1\\,000`` when the whole
  answer is that number. Any other comma separates list items and is written ``, `` (so
  ``32, 349`` stays a list, never the number 32349, and ``3, 5`` never matches 35);
* ``%`` is written ``\\%`` ("percent" too); the verifier decides what a percentage equals;
* trailing plain-text units after a number (``10 weeks``, ``5 \\text{cm}``, ``12 km/h``: lower-case
  words and known abbreviations such as ``mL``) and degree signs (``^\\circ``, ``°``, "degrees")
  are dropped, unless ``units=False`` (the exact verifier: synthetic answers have no units);
* spaces survive only between two letters or digits (``\\pi x``).

Answers with equal keys get the same verdict. This module does not decide correctness and does
not parse mathematics; it is pure string work, cheap enough to run in the calling process for
every sample.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

__all__ = ["RULES_VERSION", "extract_answer", "last_boxed", "normalise"]

#: Version of the extraction and normalisation rules, recorded in every verifier's ``settings()``
#: (so in run.json): a run graded under older rules can be found and re-graded (``rlbound
#: reverify``). Bump it whenever a rule change can change a verdict. 1: the rules before the
#: fidelity work; 2: ordered final-answer rules, box lists, meaning-preserving normalisation.
RULES_VERSION = 2

# \boxed or \fbox as a whole control word (not \boxedfoo).
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_HASH_LINE_RE = re.compile(r"^[ \t]*####[ \t]*(.+?)[ \t]*$", re.MULTILINE)
# "final answer is", "Final Answer:", "**Final Answer:**", "final answer =".
_FINAL_RE = re.compile(r"\bfinal\s+answer(?:\s*\*\*)?\s*(?:is\b|:|=)(?:\s*\*\*)?[ \t]*:?", re.IGNORECASE)
# A heading line that is only "Final Answer" (markdown # or ** around it allowed).
_FINAL_HEADING_RE = re.compile(r"[ \t#*]*final\s+answer[ \t*:]*", re.IGNORECASE)
_ANSWER_IS_RE = re.compile(r"\bthe\s+answer(?:\s*\*\*)?\s*(?:is\b|:|=)(?:\s*\*\*)?[ \t]*:?", re.IGNORECASE)
_ANY_ANSWER_MARKER_RE = re.compile(f"{_FINAL_RE.pattern}|{_ANSWER_IS_RE.pattern}", re.IGNORECASE)
_ANSWER_LINE_RE = re.compile(
    r"^[ \t]*(?:\*\*)?(?:A|Answer|ANSWER|answer)[ \t]*(?:\*\*)?[ \t]*:[ \t]*(?:\*\*)?[ \t]*(?P<rest>.+)$"
)
# A number not glued to a word or a decimal point on its left: 1,000 / -3 / 2.5 / 3/4 / 60%.
_NUMBER_RE = re.compile(
    r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?:[ \t]*\\?%)?(?![\w])"
)
_MATH_SPAN_RE = re.compile(
    r"\$\$(?P<a>.+?)\$\$|(?<!\\)\$(?P<b>.+?)(?<!\\)\$|\\\((?P<c>.+?)\\\)|\\\[(?P<d>.+?)\\\]", re.DOTALL
)
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)|\bI hope\b", re.IGNORECASE)
_COPULA_RE = re.compile(r"\s(?:is|are|was|were|equals)\s|=", re.IGNORECASE)
_TOOL_OUTPUT_RE = re.compile(r"```output[ \t]*\n(.*?)\n?[ \t]*```", re.DOTALL)
_LATEX_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_MAX_ANSWER_WORDS = 2
_MAX_ANSWER_CHARS = 80
_MAX_BOX_GAP_CHARS = 100


def _braced_group(text: str, open_index: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[open_index] == "{"`` and the index just past
    it; None if unbalanced."""
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
                return text[open_index + 1 : i], i + 1
        i += 1
    return None


def _boxed_content(text: str, after: int) -> tuple[str, int] | None:
    """Content of a \\boxed whose control word ends at ``after``, and where the box ends."""
    i = after
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        return _braced_group(text, i)
    # \boxed 5: the argument runs to the next space or math delimiter.
    match = re.match(r"[^\s$}]+", text[i:])
    return (match.group(0), i + match.end()) if match else None


def _final_boxes(text: str) -> list[tuple[int, int, str]]:
    """The last complete, non-empty, outermost box and the boxes of its line and sentence before
    it, as (start, end, content) in text order. Boxes are read from the end, so a long working
    with many boxes costs only the boxes of its final sentence."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    group: list[tuple[int, int, str]] = []
    for match in reversed(list(_BOXED_RE.finditer(text))):
        if group and _far_apart(text, match.end(), group[0][0]):
            break  # cheap test before parsing a box that cannot join the group
        parsed = _boxed_content(text, match.end())
        if parsed is None or not parsed[0].strip():  # truncated or empty
            continue
        box = (match.start(), parsed[1], parsed[0].strip())
        if group and box[1] > group[0][0]:  # it encloses boxes found so far: they are its content
            group = [box] + [inner for inner in group if inner[0] >= box[1]]
        elif not group or _same_sentence(text[box[1] : group[0][0]]):
            group.insert(0, box)
        else:
            break
    return group


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, or None.

    Braces are balanced, so ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``. A truncated final box
    (never closed) is skipped in favour of the previous complete one.
    """
    boxes = _final_boxes(text)
    return boxes[-1][2] if boxes else None


def _far_apart(text: str, box_word_end: int, group_start: int) -> bool:
    """Whether a box whose control word ends at ``box_word_end`` is certainly not in the sentence
    of the box at ``group_start``: a blank line or several hundred characters lie between them."""
    return group_start - box_word_end > 4 * _MAX_BOX_GAP_CHARS or text.find("\n\n", box_word_end, group_start) >= 0


def _same_sentence(gap: str) -> bool:
    """Whether two boxes separated by ``gap`` belong to one line and one sentence."""
    return len(gap) <= _MAX_BOX_GAP_CHARS and "\n" not in gap and not _SENTENCE_END_RE.search(gap)


def _box_group(text: str) -> tuple[int, str] | None:
    """(start of the last box, the final sentence's boxes as one answer) or None."""
    group = _final_boxes(text)
    if not group:
        return None
    contents = list(dict.fromkeys(content for _, _, content in group))  # repeats dropped
    return group[-1][0], ", ".join(contents)


# --- answer spans --------------------------------------------------------------------------------


def _math_content(match: re.Match) -> str:
    return next(group for group in match.groups() if group is not None).strip()


def _unwrapped(text: str) -> str | None:
    """``text`` without its math delimiters when it is one math span; None when empty."""
    first = _MATH_SPAN_RE.match(text)
    whole = first is not None and first.end() == len(text)  # one span, not "$12$ and $13$"
    return (_math_content(first) if whole else text) or None


def _answer_like(text: str) -> bool:
    """Short enough to be an answer rather than a sentence: at most two words of prose."""
    if not text or len(text) > _MAX_ANSWER_CHARS:
        return False
    prose = _LATEX_COMMAND_RE.sub(" ", _MATH_SPAN_RE.sub(" ", text))
    return len(_WORD_RE.findall(prose)) <= _MAX_ANSWER_WORDS


def _strip_emphasis(text: str) -> str:
    """Without surrounding markdown bold, quotes and a leading colon."""
    previous = None
    while previous != text:
        previous = text
        text = text.strip().strip("*").strip()
        text = text.removeprefix(":").removeprefix('\\"').removesuffix('\\"').strip('"').strip()
    return text


def _sentence(rest: str) -> str:
    """``rest`` up to the end of its first sentence; full stops inside math spans do not count."""
    spans = [match.span() for match in _MATH_SPAN_RE.finditer(rest)]
    for end in _SENTENCE_END_RE.finditer(rest):
        if not any(start < end.start() < stop for start, stop in spans):
            return rest[: end.start()]
    return rest


def _answer_span(rest: str) -> str | None:
    """The answer in the text that follows a marker (see the module docstring), or None."""
    rest = _strip_emphasis(rest)
    if not rest:
        return None
    boxed = _box_group(rest)
    if boxed is not None:
        return boxed[1]
    nested = _ANY_ANSWER_MARKER_RE.search(rest)
    if nested:  # "Final Answer: The final answer is $X$."
        return _answer_span(rest[nested.end() :])
    sentence = _strip_emphasis(_sentence(rest))
    if _answer_like(sentence):
        return _unwrapped(sentence)
    leading = _MATH_SPAN_RE.match(sentence)
    if leading:
        return _math_content(leading) or None
    copulas = list(_COPULA_RE.finditer(sentence))
    if copulas:
        tail = _strip_emphasis(sentence[copulas[-1].end() :])
        if _answer_like(tail):
            return _unwrapped(tail)
    spans = list(_MATH_SPAN_RE.finditer(sentence))
    if len(spans) == 1:
        return _math_content(spans[0]) or None
    numbers = _NUMBER_RE.findall(sentence)
    if len(numbers) == 1:
        return numbers[0].strip()
    return None


# --- rules ---------------------------------------------------------------------------------------


def _line_after(text: str, index: int) -> str:
    """The rest of the line from ``index``; the next non-empty line when that is empty."""
    line_end = text.find("\n", index)
    rest = text[index:] if line_end < 0 else text[index:line_end]
    if rest.strip() or line_end < 0:
        return rest
    for line in text[line_end + 1 :].split("\n"):
        if line.strip():
            return line
    return ""


def _find_all(text: str, word: str) -> list[int]:
    found, index = [], text.find(word)
    while index >= 0:
        found.append(index)
        index = text.find(word, index + 1)
    return found


def _mentions(text: str, *words: str) -> bool:
    """Cheap pre-check before a case-insensitive regex scan: ``text`` contains one of ``words``
    in lower or upper case (``Final``/``final``/``FINAL`` all contain ``inal`` or ``INAL``)."""
    return any(word in text or word.upper() in text for word in words)


def _final_answer(text: str) -> tuple[int, str] | None:
    starts = sorted(
        {i for word in ("final", "Final", "FINAL") for i in _find_all(text, word)}, reverse=True
    )
    for start in starts:  # the last statement that holds an answer
        match = _FINAL_RE.match(text, start)
        if match is not None:
            value = _answer_span(_line_after(text, match.end()))
            if value is not None:
                return start, value
        line_start, line_end = text.rfind("\n", 0, start) + 1, text.find("\n", start)
        line_end = len(text) if line_end < 0 else line_end
        if _FINAL_HEADING_RE.fullmatch(text, line_start, line_end):
            value = _answer_span(_line_after(text, line_end))
            if value is not None:
                return start, value
    return None


def _answer_line(text: str) -> tuple[int, str] | None:
    stripped = text.rstrip()
    start = stripped.rfind("\n") + 1
    match = _ANSWER_LINE_RE.match(stripped[start:])
    if match is None:
        return None
    value = _answer_span(match.group("rest"))
    return (start, value) if value is not None else None


def _hash_line(text: str) -> tuple[int, str] | None:
    if "####" not in text:
        return None
    lines = list(_HASH_LINE_RE.finditer(text))
    if not lines:
        return None
    value = lines[-1].group(1).strip().rstrip(".").strip()
    return (lines[-1].start(), value) if value else None


_STATEMENT_MARKERS: tuple[Callable[[str], tuple[int, str] | None], ...] = (
    _final_answer,
    _answer_line,
    _hash_line,
)


def _final_marker(text: str) -> str | None:
    """Rule 2: the final marker that starts last. Only a statement that starts after the last box
    can supersede it, so the statements are looked for in the text after that box alone."""
    boxed = _box_group(text)
    offset = boxed[0] if boxed is not None else 0
    tail = text[offset:]
    found = [marker for marker in (finder(tail) for finder in _STATEMENT_MARKERS) if marker is not None]
    if not found:
        return boxed[1] if boxed is not None else None
    start, value = max(found, key=lambda marker: marker[0])
    return boxed[1] if boxed is not None and start == 0 else value


def _answer_is(text: str) -> str | None:
    if not _mentions(text, "nswer"):
        return None
    for match in reversed(list(_ANSWER_IS_RE.finditer(text))):
        value = _answer_span(_line_after(text, match.end()))
        if value is not None:
            return value
    return None


def _tool_output(text: str) -> str | None:
    if "```output" not in text:
        return None
    blocks = _TOOL_OUTPUT_RE.findall(text)
    if not blocks:
        return None
    value = blocks[-1].strip()
    return value if value and "\n" not in value and _answer_like(value) else None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1].strip() if numbers else None


def extract_answer(completion: str, *, last_number_fallback: bool = False) -> str | None:
    """The final answer stated in ``completion`` (see the module docstring for the rules), or None."""
    tags = _ANSWER_TAG_RE.findall(completion)
    if tags:
        content = tags[-1]
        answer = _final_marker(content) or _answer_is(content)
        return answer if answer is not None else (content.strip() or None)
    answer = _final_marker(completion) or _answer_is(completion) or _tool_output(completion)
    if answer is None and last_number_fallback:
        answer = _last_number(completion)
    return answer


# --- normalisation -------------------------------------------------------------------------------

_DELIMITED_RE = re.compile(r"^(?:\\\((?P<a>.*)\\\)|\\\[(?P<b>.*)\\\])$", re.DOTALL)
_DOLLAR_RE = re.compile(r"\\?\$")
# \left( -> (, \left. -> nothing; never touches \leftarrow or \rightarrow.
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![A-Za-z])\s*\.?")
_SIZING_RE = re.compile(r"\\(?:big|Big|bigg|Bigg)[lrm]?(?![A-Za-z])")
_FRAC_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")
_BINOM_RE = re.compile(r"\\[dt]binom(?![A-Za-z])")
_DISPLAYSTYLE_RE = re.compile(r"\\(?:displaystyle|textstyle)(?![A-Za-z])")
# Thin/medium/thick/negative spaces and quads are presentation only.
_SPACING_RE = re.compile(r"(?<!\\)\\(?:[,;:!]|q?quad(?![A-Za-z]))")
_TEXT_SPACE_RE = re.compile(r"(?<!\\)(?:\\ |~)")
# 1{,}000 and 1,\!000 (MATH's LaTeX thousands separators) -> 1,000.
_LATEX_THOUSANDS_RE = re.compile(r"(?<=\d)(?:\{,\}|,\\!)\s*(?=\d{3}(?!\d))")
_PERCENT_RE = re.compile(r"(?:\\?%|\s*\\text\{\s*percent\s*\}|\s+percent\b)", re.IGNORECASE)
_DEGREE_RE = re.compile(
    r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![A-Za-z])|\\text\{\s*degrees?\s*\}|\s+degrees?\b)\s*$",
    re.IGNORECASE,
)
# 1,000 and 12,345.5, but not 1,0000 or 1,23 (not thousands) and not 1, 000 (a list).
_COMMA_THOUSANDS_RE = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d]|,\d)")
_SPACE_THOUSANDS_RE = re.compile(r"^[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?$")
_PLAIN_NUMBER = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:/\d+)?|[-+]?\\frac\{\d+\}\{\d+\}"
_PLAIN_NUMBER_RE = re.compile(r"-?\d{1,15}(?:\.\d+)?$")
_UNIT_WORDS = r"[A-Za-z]+(?:\^?\d)?(?:[ \-/]+[A-Za-z]+(?:\^?\d)?)*"
_TRAILING_UNIT_RE = re.compile(
    rf"^(?P<number>{_PLAIN_NUMBER})\s*(?:\\(?:text|mbox|mathrm)\s*\{{\s*(?P<a>{_UNIT_WORDS})\s*\}}"
    rf"|(?P<b>{_UNIT_WORDS}))\.?$"
)
# Words after a number that change its value or meaning: never dropped as units.
_NOT_UNITS = {
    "hundred", "thousand", "million", "billion", "trillion", "dozen", "half", "halves",
    "percent", "or", "and", "to", "than", "more", "less", "least", "most", "not", "no", "plus",
    "minus", "times", "of", "pi", "sqrt", "frac", "cdot", "e", "i",
}
_CAPITALISED_UNITS = {
    "mL", "dL", "kL", "L", "kW", "MW", "GW", "Wh", "kWh", "Hz", "kHz", "MHz", "GHz", "KB", "MB",
    "GB", "TB", "Pa", "kPa", "MPa", "kN", "kJ", "MJ", "mA", "kV", "mV", "Ah", "mAh", "USD", "EUR",
}
_LIST_COMMA_RE = re.compile(r"\s*,\s*")
# A list comma before exactly three digits is written ", " so that it never reads as thousands.
_AMBIGUOUS_COMMA_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# A space survives only between two letters/digits (``\pi x``, ``1 2``); elsewhere it is noise.
_REMOVABLE_SPACE_RE = re.compile(r"(?<![A-Za-z0-9]) +| +(?![A-Za-z0-9])")


def _strip_outer(text: str) -> str:
    text = text.strip()
    delimited = _DELIMITED_RE.match(text)
    if delimited:
        text = next(group for group in delimited.groups() if group is not None).strip()
    text = _DOLLAR_RE.sub("", text).strip()
    while text.endswith(".") and not text.endswith("\\."):
        text = text[:-1].rstrip()
    return text


def _bracket_depth(text: str, index: int) -> int:
    """How many ``(`` / ``[`` / ``\\{`` are open at ``text[index]``."""
    depth = 0
    for i, char in enumerate(text[:index]):
        if char in "([" or (char == "{" and i > 0 and text[i - 1] == "\\"):
            depth += 1
        elif char in ")]" or (char == "}" and i > 0 and text[i - 1] == "\\"):
            depth = max(0, depth - 1)
    return depth


def _thousands(match: re.Match) -> str:
    """Drop the separators of ``1,000``, except inside brackets, where commas part list items
    (``(12,102)`` is a pair, not 12102)."""
    if _bracket_depth(match.string, match.start()) > 0:
        return match.group(0)
    return match.group(0).replace(",", "")


def _drop_unit(text: str) -> str:
    """``10 weeks`` -> ``10``; anything else unchanged (see :data:`_NOT_UNITS`)."""
    match = _TRAILING_UNIT_RE.match(text)
    if match is None:
        return text
    words = re.findall(r"[A-Za-z]+", match["a"] or match["b"])
    if sum(len(word) for word in words) < 2 or any(word.lower() in _NOT_UNITS for word in words):
        return text
    if not all(word.islower() or word in _CAPITALISED_UNITS for word in words):
        return text  # "4Wt gddL" is not a unit: only lower-case words and known abbreviations
    return match["number"]


@lru_cache(maxsize=1 << 16)
def normalise(answer: str, units: bool = True) -> str:
    """The cache-key form of ``answer``: equal keys are certainly equivalent answers.

    ``units=False`` keeps trailing units and degree signs: for exact answers (synthetic tasks),
    where ``4 abc`` must not read as ``4``. At large k most samples repeat a handful of answers,
    so keys are memoised.

    >>> normalise(r"$\\left( 1, \\dfrac{1}{2} \\right)$.")
    '(1,\\\\frac{1}{2})'
    """
    text = _strip_outer(answer)
    if _PLAIN_NUMBER_RE.match(text):  # the common case, already in its key form
        return text
    if "\\" in text or "~" in text:  # LaTeX presentation commands
        text = _LATEX_THOUSANDS_RE.sub(",", text)
        text = _LEFT_RIGHT_RE.sub("", text)
        text = _SIZING_RE.sub("", text)
        text = _FRAC_RE.sub(r"\\frac", text)
        text = _BINOM_RE.sub(r"\\binom", text)
        text = _DISPLAYSTYLE_RE.sub(" ", text)
        text = _SPACING_RE.sub(" ", text)
        text = _TEXT_SPACE_RE.sub(" ", text)
    elif "{,}" in text:
        text = _LATEX_THOUSANDS_RE.sub(",", text)
    text = " ".join(text.split())
    if "%" in text or "ercent" in text:
        text = _PERCENT_RE.sub(r"\\%", text)
    if units and ("circ" in text or "°" in text or "egree" in text):
        text = _DEGREE_RE.sub("", text)
    if "," in text:
        text = _COMMA_THOUSANDS_RE.sub(_thousands, text)
    if " " in text:
        if _SPACE_THOUSANDS_RE.match(text):
            text = text.replace(" ", "")
        text = _drop_unit(text) if units else text
        text = _REMOVABLE_SPACE_RE.sub("", text)
    elif units and "\\" in text:
        text = _drop_unit(text)  # 5\text{cm}
    if "," in text:
        text = _LIST_COMMA_RE.sub(",", text)
        text = _AMBIGUOUS_COMMA_RE.sub(", ", text)
    return _strip_outer(text)
