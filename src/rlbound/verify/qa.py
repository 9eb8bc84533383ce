"""The "qa" verifier: short factual answers (SimpleQA, TriviaQA, NQ style) by normalised string match.

A completion is graded in three steps.

1. **Extraction** (:func:`extract_qa_answer`), first rule that applies:

   * a reasoning block is dropped: only the text after the last ``</think>`` counts, and a
     ``<think>`` that is never closed (a truncated trace) gives no answer;
   * the last ``<answer>...</answer>``: its content;
   * the final marker that starts last: the last complete ``\\boxed{}`` (read by
     :func:`rlbound.verify.extract.last_boxed`, ``\\text{}`` unwrapped), or the last "Final
     answer: X" / "final answer is X" / "the answer is X" / a line starting ``Answer:`` or
     ``A:``. After a marker the answer is the rest of its line up to the end of its first
     sentence (a full stop after an initial such as "J. R. R. Tolkien" or an abbreviation such
     as "St." or "Mt." does not end it);
   * otherwise the last non-empty line, whole.

   The math extraction rules of :mod:`rlbound.verify.extract` are not used beyond ``last_boxed``:
   they keep at most two words of prose ("answer-like"), and factual answers are names such as
   "Wolfgang Amadeus Mozart". Surrounding markdown emphasis, quotes, ``$..$``, a list bullet and a
   trailing full stop are stripped.

2. **Normalisation** (:func:`normalise_qa`), the SQuAD rules (lower case, punctuation dropped,
   the articles a/an/the dropped, whitespace collapsed) with these decisions of rlbound's own,
   applied to gold and answer alike:

   * accents are dropped (``Gödel`` = ``Godel``); all Unicode punctuation and symbols go, not only
     ASCII's;
   * dashes and slashes separate words (``Jean-Paul`` = ``Jean Paul``; SQuAD glues them);
   * a thousands comma goes (``1,000`` = ``1000``) but a decimal point between digits stays
     (``3.5`` is not ``35``, which SQuAD's rule would make equal);
   * ``%`` is read "percent" (``50%`` = ``50 percent``);
   * the number words zero to twenty are digits (``two`` = ``2``; ``Twenty-One`` is ``20 1``,
     compound number words are not added up, and ordinals are left alone: ``first`` is not
     ``1st``).

3. **Matching**: ``match="exact"`` (default): correct when the normalised answer equals a
   normalised gold answer; ``match="f1"``: correct when the SQuAD token F1 (:func:`token_f1`) with
   some gold answer is at least ``f1_threshold`` (default 0.5). An answer that does not match and
   reads as a refusal or a bare hedge (:func:`is_refusal`: "I don't know", "I'm not sure",
   "cannot answer", "no information", "unknown") gets status ``not_attempted``: not correct, but
   not counted as wrong-but-attempted in SimpleQA's numbers
   (:mod:`rlbound.analysis.qa`). A refusal followed by a guess ("I'm not sure, but maybe Paris")
   counts as attempted. An empty answer is the pool's ``no_answer``, which those numbers count as
   not attempted too.

References: a plain string (one gold answer), or a JSON object (:func:`qa_reference`)
``{"answer": "Paris" | ["Paris", "Paris, France"], "question": "..."}``; several answers: any one
matches. The question is not used here; the judge (:mod:`rlbound.verify.qa_judge`) needs it.

What it does not do: no semantic equivalence (``JFK`` is not ``John F. Kennedy``: use
``qa-judge``), no units or dates reasoning (``1 km`` is not ``1000 m``; ``July 4, 1776`` is not
``4 July 1776``), and refusal detection is a phrase list in English, not understanding.
The pool runs it inline (cheap string work, no worker processes).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlbound.errors import RlboundError
from rlbound.verify.base import STATUS_NOT_ATTEMPTED, CheckResult, Verifier, register_verifier
from rlbound.verify.extract import last_boxed

__all__ = [
    "QA_MATCHES",
    "QA_RULES_VERSION",
    "QAReference",
    "QAVerifier",
    "extract_qa_answer",
    "is_refusal",
    "normalise_qa",
    "parse_qa_reference",
    "qa_reference",
    "token_f1",
]

#: Version of the QA extraction, normalisation and refusal rules (recorded in run.json as
#: ``rules``); bump it when a change can change a verdict.
QA_RULES_VERSION = 1
QA_MATCHES = ("exact", "f1")

# --- references ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QAReference:
    """A parsed QA reference: the accepted gold ``answers`` and the ``question`` (None if absent)."""

    answers: tuple[str, ...]
    question: str | None = None


def qa_reference(answer: str | Sequence[str], question: str | None = None) -> str:
    """The JSON reference string for gold ``answer`` (one string or several accepted ones),
    carrying ``question`` for the judge. Keys are sorted, so equal references are equal strings
    (they are cache keys)."""
    answers = [answer] if isinstance(answer, str) else list(answer)
    if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise RlboundError("a QA reference needs a non-empty gold answer (a string or a list of strings)")
    record: dict[str, Any] = {"answer": answers[0] if len(answers) == 1 else answers}
    if question is not None:
        record["question"] = str(question)
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def parse_qa_reference(reference: str) -> QAReference:
    """Read a reference: a JSON object with ``answer`` (and ``question``), else a plain gold string."""
    text = reference.strip()
    if text.startswith("{"):
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and "answer" in record:
            answer = record["answer"]
            answers = (answer,) if isinstance(answer, str) else tuple(answer) if isinstance(answer, list) else ()
            if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
                raise RlboundError(f"QA reference {_clip(reference)!r}: 'answer' must be a non-empty string "
                                   "or a list of them")
            question = record.get("question")
            return QAReference(answers, None if question is None else str(question))
    if not text:
        raise RlboundError("QA reference is empty: every problem needs a gold answer")
    return QAReference((reference,))


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# --- normalisation -------------------------------------------------------------------------------

_ARTICLES = {"a", "an", "the"}
_NUMBER_WORDS = {
    word: str(i) for i, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split())
}
_THOUSANDS_COMMA_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DECIMAL_POINT = "\uE000"  # a private-use character: survives the punctuation rule


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


def normalise_qa(text: str) -> str:
    """The SQuAD normalisation with rlbound's decisions (see the module docstring)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = _THOUSANDS_COMMA_RE.sub("", text)
    text = re.sub(r"(?<=\d)\.(?=\d)", _DECIMAL_POINT, text)
    text = text.replace("%", " percent ")
    chars = []
    for char in text:
        if char == "/" or unicodedata.category(char) == "Pd":
            chars.append(" ")
        elif not _is_punctuation(char):
            chars.append(char)
    tokens = []
    for token in "".join(chars).split():
        token = _NUMBER_WORDS.get(token, token)
        if token not in _ARTICLES:
            tokens.append(token.replace(_DECIMAL_POINT, "."))
    return " ".join(tokens)


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD's token F1 of two strings, on their :func:`normalise_qa` tokens (1.0 when both are
    empty, 0.0 when only one is)."""
    pred, ref = normalise_qa(prediction).split(), normalise_qa(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


# --- refusals ------------------------------------------------------------------------------------

# Phrases of a normalised answer (lower case, no punctuation: "don't" is "dont") that decline to
# answer. Matched anywhere in the first words; whole-answer forms below.
_REFUSAL_RE = re.compile(
    r"\b(?:"
    r"i (?:do not|dont|did not|didnt) (?:know|have (?:(?:enough|sufficient|any|that|this|specific|reliable) )?"
    r"(?:information|data|knowledge|details|access|answer))"
    r"|(?:i am|im|i m) (?:not (?:sure|certain|aware|able)|unsure|uncertain|unable)"
    r"|(?:cannot|can not|cant|could not|couldnt|unable to|not able to) "
    r"(?:answer|determine|be determined|find|say|tell|provide|verify|recall|confirm|identify|know|be sure)"
    r"|i have no (?:idea|information|knowledge|data|record)"
    r"|(?:no|not enough|insufficient) (?:information|data|records?|reliable information)"
    r"|(?:not|impossible to|no way to) (?:possible to )?(?:determine|know|say)"
    r"|there (?:is|are) no (?:information|records?|data)"
    r"|no idea"
    r")\b"
)
# Whole answers that decline. "N/A" normalises to "n" (the slash splits it, "a" is an article).
_WHOLE_REFUSALS = {"unknown", "not known", "unsure", "not sure", "idk", "n", "na", "no answer", "none known",
                   "dont know", "no comment"}
# A guess after the refusal makes the answer an attempt ("not sure, but probably Paris").
_GUESS_RE = re.compile(r"\b(?:but|however|guess|perhaps|maybe|possibly|probably|likely|i think|i believe)\b")
_REFUSAL_WINDOW = 12  # the refusal must start within the answer's first words


def is_refusal(answer: str) -> bool:
    """Whether ``answer`` declines to answer (a refusal or a bare hedge), with no guess in it."""
    text = normalise_qa(answer)
    if not text:
        return True
    if text in _WHOLE_REFUSALS:
        return True
    match = _REFUSAL_RE.search(text)
    if match is None or len(text[: match.start()].split()) > _REFUSAL_WINDOW:
        return False
    return _GUESS_RE.search(text) is None


# --- extraction ----------------------------------------------------------------------------------

_THINK_END = "</think>"
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_MARKER_RE = re.compile(
    r"(?:\bfinal\s+answer\s*(?:\*\*)?\s*(?:is\b|:)|\bthe\s+answer\s*(?:\*\*)?\s*(?:is\b|:)"
    r"|^[ \t>*#-]*(?:\*\*)?(?:answer|a)(?:\*\*)?[ \t]*(?:\*\*)?[ \t]*:)",
    re.IGNORECASE | re.MULTILINE,
)
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_ABBREVIATIONS = {"st", "mt", "ft", "dr", "mr", "mrs", "ms", "jr", "sr", "prof", "gen", "col", "capt", "lt",
                  "sgt", "rev", "hon", "vs", "no", "co", "inc", "ltd", "corp", "univ", "dept", "est", "approx",
                  "ca", "c", "vol", "ch", "fig", "op", "ed", "etc", "al", "u.s", "u.k", "d.c"}
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)")


def _first_sentence(text: str) -> str:
    for end in _SENTENCE_END_RE.finditer(text):
        if text[end.start()] == ".":
            word = re.search(r"([\w.]*)$", text[: end.start()]).group(1).casefold()
            if len(word.rstrip(".")) <= 1 or word in _ABBREVIATIONS:  # an initial or "St."
                continue
        return text[: end.start()]
    return text


def _clean(text: str) -> str | None:
    previous = None
    text = _TEXT_WRAP_RE.sub(r"\1", text)
    while previous != text:
        previous = text
        text = text.strip()
        text = re.sub(r"^(?:[-*•]|\d+[.)])\s+", "", text)  # a list bullet
        text = text.strip("*_`").strip()
        for left, right in (('"', '"'), ("'", "'"), ("“", "”"), ("$", "$")):
            if len(text) >= 2 and text.startswith(left) and text.endswith(right):
                text = text[len(left): -len(right)]
        text = text.removeprefix(":").strip()
        if text.endswith(".") and not text.endswith(".."):
            text = text[:-1]
    return text or None


def _last_marker(text: str) -> tuple[int, str] | None:
    """The answer after the last marker (final answer / the answer is / Answer: / A:)."""
    for match in reversed(list(_MARKER_RE.finditer(text))):
        line_end = text.find("\n", match.end())
        rest = text[match.end(): len(text) if line_end < 0 else line_end]
        if not rest.strip() and line_end >= 0:  # "Final Answer:" then the answer on the next line
            following = [line for line in text[line_end + 1:].split("\n") if line.strip()]
            rest = following[0] if following else ""
        boxed = last_boxed(rest)
        answer = _clean(boxed) if boxed is not None else _clean(_first_sentence(_clean(rest) or ""))
        if answer is not None:
            return match.start(), answer
    return None


def extract_qa_answer(completion: str) -> str | None:
    """The answer a completion commits to (the rules of the module docstring), or None."""
    text = completion
    if _THINK_END in text:
        text = text.rsplit(_THINK_END, 1)[1]
    elif "<think>" in text:
        return None  # the reasoning never ended: no answer was given
    tags = _ANSWER_TAG_RE.findall(text)
    if tags:
        return _clean(tags[-1])
    marker = _last_marker(text)
    box_at = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    boxed = last_boxed(text) if box_at >= 0 else None
    if boxed is not None and (marker is None or box_at > marker[0]):
        return _clean(boxed)
    if marker is not None:
        return marker[1]
    lines = [line for line in text.split("\n") if line.strip()]
    return _clean(lines[-1]) if lines else None


# --- the verifier --------------------------------------------------------------------------------


@register_verifier("qa")
class QAVerifier(Verifier):
    """Normalised exact match or token F1 against the gold answer(s); refusals are ``not_attempted``.

    Args:
        match: ``exact`` (normalised equality) or ``f1`` (token F1 >= ``f1_threshold``).
        f1_threshold: the least F1 that counts as correct with ``match="f1"`` (0 < t <= 1).
    """

    name = "qa"
    cheap = True  # pure string work: runs inline, no worker processes

    def __init__(self, match: str = "exact", f1_threshold: float = 0.5):
        if match not in QA_MATCHES:
            raise RlboundError(f"verifier qa: match must be one of {', '.join(QA_MATCHES)}, got {match!r}")
        if isinstance(f1_threshold, bool) or not isinstance(f1_threshold, (int, float)) or not 0 < f1_threshold <= 1:
            raise RlboundError(f"verifier qa: f1_threshold must be a number in (0, 1], got {f1_threshold!r}")
        self.match = match
        self.f1_threshold = float(f1_threshold)

    def extract(self, completion: str) -> str | None:
        return extract_qa_answer(completion)

    def normalise(self, answer: str) -> str:
        return normalise_qa(answer)

    def matches(self, gold: str, answer: str) -> bool:
        """Whether ``answer`` matches one ``gold`` answer under this verifier's ``match`` rule."""
        if not normalise_qa(gold):
            raise RlboundError(f"QA gold answer {_clip(gold)!r} is empty once normalised (only articles or "
                               "punctuation); it can match nothing")
        if self.match == "exact":
            return normalise_qa(answer) == normalise_qa(gold)
        return token_f1(answer, gold) >= self.f1_threshold

    def equivalent(self, reference: str, answer: str) -> bool:
        return any(self.matches(gold, answer) for gold in parse_qa_reference(reference).answers)

    def check(self, reference: str, answer: str) -> CheckResult:
        if self.equivalent(reference, answer):
            return CheckResult(True)
        if is_refusal(answer):
            return CheckResult(False, STATUS_NOT_ATTEMPTED)
        return CheckResult(False)

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verifier": self.name, "rules": QA_RULES_VERSION, "match": self.match}
        if self.match == "f1":
            out["f1_threshold"] = self.f1_threshold
        return out
