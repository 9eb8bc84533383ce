"""The "qa-judge" verifier: a model on an OpenAI-compatible server grades factual answers.

SimpleQA (Wei et al. 2024) grades each answer with a model that sees the question, the gold
target and the predicted answer and says CORRECT, INCORRECT or NOT_ATTEMPTED. This verifier does
the same through rlbound's ``openai`` engine (:mod:`rlbound.engines.openai`: retries, backoff,
one-line server errors), with a rubric written for rlbound (:data:`DEFAULT_RUBRIC`, version
:data:`RUBRIC_VERSION`) that states SimpleQA's grading rules.

* **What is graded**: the answer extracted by the ``qa`` rules
  (:func:`rlbound.verify.qa.extract_qa_answer`; whitespace collapsed, cut at
  ``judge_max_answer_chars``), against the gold answer(s) and the question. The question comes
  with the reference: :meth:`QAJudgeVerifier.reference_for` turns a problem's plain gold answer
  into the JSON reference ``{"answer": gold, "question": problem.prompt}``
  (:func:`rlbound.verify.qa.qa_reference`); a reference that already carries a question is used as
  it is. The sampler, ``rlbound reverify`` and ``rlbound verify-check --task`` pass references that
  way; a caller that builds references itself passes :func:`qa_reference` strings.
* **Verdicts**: the reply's first word, or the word after its last ``Verdict:``, must be CORRECT,
  INCORRECT or NOT_ATTEMPTED (any case; text after ``</think>`` only). CORRECT is correct,
  INCORRECT is wrong (status ``ok``), NOT_ATTEMPTED is status ``not_attempted``; any other reply
  is status ``error`` and logged as a warning, never guessed. ``judge_guided=true`` asks a vLLM
  server to emit only one of the three words (structured outputs), so every reply parses.
* **Cache**: verdicts are cached like any other (:mod:`rlbound.verify.cache`), keyed by (the
  verifier signature, the reference, the answer key). The reference holds the question and the
  gold answer(s); the signature holds :meth:`settings`: the rubric's version (or a custom rubric's
  text), the judge engine and model, endpoint, guidance, token and answer limits. The server's URL
  and the API key are not part of it (nor of run.json): the same judge model behind another URL
  gives the same verdicts.
* **Requests**: one per distinct uncached (reference, answer), greedy (temperature 0, seed 0),
  ``judge_concurrency`` in flight, each attempt limited to ``judge_timeout_s`` and retried
  ``judge_max_retries`` times; the verifier pool's ``timeout_s`` does not apply. The batch goes to
  the server at once (``check_many``), from the calling process. A server that does not answer,
  refuses a request (4xx, e.g. a prompt past its context) or does not serve the model ends the
  call with a one-line :class:`~rlbound.errors.RlboundError`: no verdict is made up. Nothing is
  sent for a batch whose answers are all cached.

Options (``-V KEY=VALUE``; ``rlbound sample/reverify --judge-engine --judge-model --judge-url``):
``judge_model`` (the served model name, required), ``judge_engine`` (``openai``, the only judge
engine), ``judge_url`` (default env ``OPENAI_BASE_URL``), ``judge_api_key_env`` (the *name* of the
variable holding the key), ``judge_endpoint`` (``chat``: the server's chat template, default; or
``completions``: the rubric as raw text), ``judge_guided``, ``judge_max_tokens``,
``judge_concurrency``, ``judge_timeout_s``, ``judge_max_retries``, ``judge_max_answer_chars``, and
``judge_rubric`` (a file, or the text itself, with ``{question}``, ``{gold}`` and ``{answer}``).

What it does not do: it does not check the judge's wisdom (agreement with human graders is the
user's to measure, e.g. with ``rlbound verify-check``), it sends no few-shot examples, it does not
run a judge in-process (no tiny/hf/vllm judge engines) and it does not fall back to string
matching when the server is gone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rlbound.errors import RlboundError
from rlbound.verify.base import (
    STATUS_ERROR,
    STATUS_NOT_ATTEMPTED,
    CheckResult,
    Verifier,
    register_verifier,
)
from rlbound.verify.qa import (
    QA_RULES_VERSION,
    QAReference,
    extract_qa_answer,
    parse_qa_reference,
    qa_reference,
)

__all__ = ["DEFAULT_RUBRIC", "JUDGE_ENGINES", "RUBRIC_VERSION", "VERDICTS", "QAJudgeVerifier",
           "parse_verdict", "render_rubric"]

logger = logging.getLogger(__name__)

#: Version of :data:`DEFAULT_RUBRIC` (recorded in run.json); bump it when its wording changes.
RUBRIC_VERSION = 1
VERDICTS = ("CORRECT", "INCORRECT", "NOT_ATTEMPTED")
JUDGE_ENGINES = ("openai",)
JUDGE_ENDPOINTS = ("chat", "completions")
JUDGE_SEED = 0
PLACEHOLDERS = ("{question}", "{gold}", "{answer}")

#: The grading rubric (SimpleQA's rules, in rlbound's words).
DEFAULT_RUBRIC = """\
You grade one answer to a factual question by comparing it with the gold answer. Decide whether \
the answer is CORRECT, INCORRECT or NOT_ATTEMPTED.

CORRECT: the answer states the key fact of the gold answer and nothing that contradicts it. \
Differences of case, punctuation, word order and grammar do not matter. Hedged wording ("I think \
it is X") is fine when X agrees with the gold answer. The answer may leave out parts of the gold \
answer that the question already gives or does not ask for. A small misspelling of a name is \
fine when it clearly names the same person or thing. A number must agree with the gold answer to \
the gold answer's last significant figure.

INCORRECT: the answer states something that contradicts the gold answer, even when hedged; or it \
offers several different candidates and not all of them agree with the gold answer; or its \
number is off beyond the gold answer's precision.

NOT_ATTEMPTED: the answer does not state the key fact of the gold answer and does not contradict \
it: it declines ("I don't know", "I could not find this"), asks for more context, or stays too \
vague to check.

Judge only against the gold answer; do not overrule it with your own knowledge.

Question: {question}
Gold answer: {gold}
Answer to grade: {answer}

Reply with one word: CORRECT, INCORRECT or NOT_ATTEMPTED.
Verdict:"""

_PLACEHOLDER_RE = re.compile(r"\{(question|gold|answer)\}")
_VERDICT_WORD_RE = re.compile(r"(not[ _-]?attempted|incorrect|correct)\b", re.IGNORECASE)
_VERDICT_MARK_RE = re.compile(r"verdict\s*[:=]", re.IGNORECASE)


def render_rubric(template: str, question: str, gold: Sequence[str], answer: str) -> str:
    """``template`` with its placeholders filled in one pass (braces in the values stay as they are).

    Several gold answers read "A (also accepted: B; C)"."""
    gold_text = gold[0] if len(gold) == 1 else f"{gold[0]} (also accepted: {'; '.join(gold[1:])})"
    values = {"question": question, "gold": gold_text, "answer": answer}
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


def parse_verdict(reply: str) -> str | None:
    """CORRECT, INCORRECT or NOT_ATTEMPTED from a judge's reply; None when it is none of them.

    Read after the last ``</think>``: the reply's first word, else the word after its last
    ``Verdict:``. Anything else (an explanation first, "not correct") is no verdict."""
    text = reply.rsplit("</think>", 1)[-1]
    candidates = [text]
    marks = list(_VERDICT_MARK_RE.finditer(text))
    if marks:
        candidates.append(text[marks[-1].end():])
    for candidate in candidates:
        match = _VERDICT_WORD_RE.match(candidate.lstrip(" \t\n*_`\"'#>:"))
        if match:
            word = re.sub(r"[ _-]", "", match.group(1).upper())
            return "NOT_ATTEMPTED" if word == "NOTATTEMPTED" else word
    return None


def _rubric_text(value: str | None) -> str | None:
    """The custom rubric given as text or as a file; None for the built-in one."""
    if value is None or value == "":
        return None
    text = str(value)
    if "{answer}" not in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise RlboundError(f"qa-judge: judge_rubric {text!r} is neither a file nor a rubric with {{question}}, "
                               "{gold} and {answer} in it")
        text = path.read_text(encoding="utf-8")
    missing = [p for p in PLACEHOLDERS if p not in text]
    if missing:
        raise RlboundError(f"qa-judge: the judge rubric lacks {', '.join(missing)}; it needs {', '.join(PLACEHOLDERS)}")
    return text


def _positive_int(name: str, value: Any, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise RlboundError(f"qa-judge: {name} must be an integer >= {least}, got {value!r}")
    return value


@register_verifier("qa-judge")
class QAJudgeVerifier(Verifier):
    """A judge model on an OpenAI-compatible server grades (question, gold, answer); see the module
    docstring for the options, the cache key and what happens when the server fails."""

    name = "qa-judge"

    def __init__(
        self,
        judge_model: str | None = None,
        judge_engine: str = "openai",
        judge_url: str | None = None,
        judge_api_key_env: str = "OPENAI_API_KEY",
        judge_endpoint: str = "chat",
        judge_guided: bool = False,
        judge_max_tokens: int = 32,
        judge_concurrency: int = 32,
        judge_timeout_s: float = 120.0,
        judge_max_retries: int = 3,
        judge_max_answer_chars: int = 1000,
        judge_rubric: str | None = None,
    ):
        if not judge_model:
            raise RlboundError("verifier qa-judge needs the judge's model: --judge-model NAME (the served model "
                               "name), or -V judge_model=NAME")
        if judge_engine not in JUDGE_ENGINES:
            raise RlboundError(f"qa-judge: judge engine must be {' or '.join(JUDGE_ENGINES)} (an OpenAI-compatible "
                               f"server, e.g. `vllm serve`), got {judge_engine!r}")
        if judge_endpoint not in JUDGE_ENDPOINTS:
            raise RlboundError(f"qa-judge: judge_endpoint must be chat or completions, got {judge_endpoint!r}")
        if not isinstance(judge_guided, bool):
            raise RlboundError(f"qa-judge: judge_guided must be true or false, got {judge_guided!r}")
        if isinstance(judge_timeout_s, bool) or not isinstance(judge_timeout_s, (int, float)) or judge_timeout_s <= 0:
            raise RlboundError(f"qa-judge: judge_timeout_s must be a positive number, got {judge_timeout_s!r}")
        url = judge_url or os.environ.get("OPENAI_BASE_URL")
        if not url:
            raise RlboundError("verifier qa-judge needs the judge server's URL: --judge-url http://HOST:PORT/v1 "
                               "(or -V judge_url=..., or set OPENAI_BASE_URL)")
        self.judge_model = str(judge_model)
        self.judge_engine = judge_engine
        self.judge_url = str(url)
        self.judge_api_key_env = str(judge_api_key_env)
        self.judge_endpoint = judge_endpoint
        self.judge_guided = judge_guided
        self.judge_max_tokens = _positive_int("judge_max_tokens", judge_max_tokens)
        self.judge_concurrency = _positive_int("judge_concurrency", judge_concurrency)
        self.judge_timeout_s = float(judge_timeout_s)
        self.judge_max_retries = _positive_int("judge_max_retries", judge_max_retries, least=0)
        self.judge_max_answer_chars = _positive_int("judge_max_answer_chars", judge_max_answer_chars)
        self.custom_rubric = _rubric_text(judge_rubric)
        self.rubric = self.custom_rubric or DEFAULT_RUBRIC
        self._judge: Any = None  # the engine, built on the first batch that needs the server

    # ----------------------------------------------------------------------------- the protocol
    def extract(self, completion: str) -> str | None:
        return extract_qa_answer(completion)

    def reference_for(self, problem: Any) -> str:
        ref = parse_qa_reference(problem.reference)
        if ref.question is not None:
            return problem.reference
        return qa_reference(list(ref.answers), problem.prompt)

    def equivalent(self, reference: str, answer: str) -> bool:
        return self.check(reference, answer).correct

    def check(self, reference: str, answer: str) -> CheckResult:
        return dict(self.check_many([(reference, answer)]))[0]

    def check_many(self, pairs: Sequence[tuple[str, str]]) -> Iterator[tuple[int, CheckResult]]:
        """Ask the judge about every ``(reference, answer)`` pair, ``judge_concurrency`` at a time;
        yield ``(index, result)`` as replies arrive. Server failures raise one-line errors."""
        from rlbound.engines.base import SampleRequest, SamplingParams

        prompts = [self.prompt(parse_qa_reference(reference), answer) for reference, answer in pairs]
        if not prompts:
            return
        engine = self._engine()
        if self.judge_endpoint == "chat":
            prompts = [engine.chat_prompt(p) for p in prompts]
        requests = (SampleRequest(i, p, JUDGE_SEED) for i, p in enumerate(prompts))
        params = SamplingParams(temperature=0.0, max_tokens=self.judge_max_tokens)
        unreadable: list[str] = []
        try:
            for request, sample in engine.stream(requests, params):
                verdict = parse_verdict(sample.text)
                if verdict is None:
                    unreadable.append(sample.text)
                yield request.key, _result(verdict)
        except RlboundError as err:
            raise RlboundError(self._explain(err)) from None
        finally:
            if unreadable:
                logger.warning("qa-judge: %d of %d judge replies were no verdict (graded status 'error'), e.g. %r",
                               len(unreadable), len(prompts), " ".join(unreadable[0].split())[:120])

    def prompt(self, reference: QAReference, answer: str) -> str:
        """The rubric filled in for one (question, gold, answer)."""
        if reference.question is None:
            raise RlboundError(f"qa-judge grades (question, gold, answer), but the reference for gold answer "
                               f"{reference.answers[0]!r} carries no question: pass references from "
                               "verifier.reference_for(problem) or rlbound.verify.qa.qa_reference(answer, question)")
        if len(answer) > self.judge_max_answer_chars:
            answer = answer[: self.judge_max_answer_chars] + " …"
        return render_rubric(self.rubric, reference.question, reference.answers, answer)

    def settings(self) -> dict[str, Any]:
        rubric = (f"custom-{hashlib.sha256(self.custom_rubric.encode()).hexdigest()[:12]}"
                  if self.custom_rubric else f"rlbound-simpleqa-{RUBRIC_VERSION}")
        return {
            "verifier": self.name, "rules": QA_RULES_VERSION, "rubric": rubric,
            "judge_engine": self.judge_engine, "judge_model": self.judge_model,
            "judge_endpoint": self.judge_endpoint, "judge_guided": self.judge_guided,
            "judge_max_tokens": self.judge_max_tokens, "judge_temperature": 0.0,
            "judge_max_answer_chars": self.judge_max_answer_chars, "judge_rubric": self.custom_rubric,
        }

    # ----------------------------------------------------------------------------- the server
    def _engine(self) -> Any:
        if self._judge is None:
            from rlbound.engines.base import load_engine

            options: dict[str, Any] = {
                "base_url": self.judge_url, "api_key_env": self.judge_api_key_env, "endpoint": self.judge_endpoint,
                "concurrency": self.judge_concurrency, "timeout_s": self.judge_timeout_s,
                "max_retries": self.judge_max_retries, "logprobs": False,
            }
            if self.judge_guided:  # vLLM's structured outputs: the reply is one of the verdict words
                options["extra_body"] = {"structured_outputs": {"choice": list(VERDICTS)}}
            try:
                self._judge = load_engine(self.judge_engine, self.judge_model, **options)
            except RlboundError as err:
                raise RlboundError(self._explain(err)) from None
        return self._judge

    def _explain(self, err: RlboundError) -> str:
        """The engine's one-line error, as the judge's, naming the judge's own flags."""
        text = str(err).replace("check -E base_url", "check --judge-url").replace(
            "-E api_key_env=NAME", "-V judge_api_key_env=NAME").replace(
            "rerun the same command to resume", "rerun the same command to grade the rest")
        return f"qa-judge (model {self.judge_model!r}): {text}"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_judge"] = None  # connections do not travel
        return state


def _result(verdict: str | None) -> CheckResult:
    if verdict == "CORRECT":
        return CheckResult(True)
    if verdict == "INCORRECT":
        return CheckResult(False)
    if verdict == "NOT_ATTEMPTED":
        return CheckResult(False, STATUS_NOT_ATTEMPTED)
    return CheckResult(False, STATUS_ERROR)
