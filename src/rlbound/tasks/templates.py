"""Prompt templates by name.

A template turns a problem's question text into the exact prompt string an engine sees:

* ``plain``: ``Q: {question}\\nA: `` (the built-in tiny models are trained on this form);
* ``raw``: the question text unchanged;
* ``qwen-boxed``: the Qwen2.5-Math chat prompt asking for step-by-step reasoning and a final
  ``\\boxed{}`` answer (the prompt used in the large-k pass@k studies of Qwen models);
* ``r1``: the DeepSeek-R1-Zero prompt with ``<think>`` / ``<answer>`` tags;
* ``chat``: the model's own chat template (from its tokenizer), with the boxed-answer instruction;
* ``qa-short``: the model's chat template, asking for a short factual answer on an ``Answer:`` line
  (SimpleQA; saying "I don't know" is allowed and graded as not attempted);
* ``code-complete``: the problem's text unchanged, for completion-style code models (HumanEval's
  prompt is the function's signature and docstring: the model continues it);
* ``code-instruct``: the model's chat template, asking for a complete Python program in one
  fenced code block (instruction-tuned models; the code verifier takes the last Python block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlbound.registry import Registry

if TYPE_CHECKING:
    from rlbound.engines.base import Engine

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = ("Solve the following problem in Python 3 using only the standard library. Reply with "
                    "the complete program in a single ```python code block.")


QA_INSTRUCTION = ("Answer the following question with a short answer (a name, a number, a date or a few "
                  "words), on a line of its own starting with \"Answer:\". If you do not know, say so.")


@dataclass(frozen=True)
class PromptTemplate:
    """A text with a ``{question}`` slot (filled by plain replacement, so braces such as
    ``\\boxed{}`` stay literal); ``chat`` templates go through the engine's own."""

    name: str
    text: str
    chat: bool = False

    def render(self, question: str, engine: "Engine | None" = None) -> str:
        body = self.text.replace("{question}", question)
        if not self.chat:
            return body
        if engine is None:
            raise ValueError("a chat template needs the engine that owns the chat format")
        return engine.chat_prompt(body)


TEMPLATES: Registry[PromptTemplate] = Registry("prompt template")


def _add(template: PromptTemplate) -> None:
    TEMPLATES.register(template.name)(template)


_add(PromptTemplate("plain", "Q: {question}\nA: "))
_add(PromptTemplate("raw", "{question}"))
_add(
    PromptTemplate(
        "qwen-boxed",
        "<|im_start|>system\n" + BOXED_INSTRUCTION + "<|im_end|>\n"
        "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n",
    )
)
_add(
    PromptTemplate(
        "r1",
        "A conversation between User and Assistant. The User asks a question, and the Assistant "
        "solves it. The Assistant first thinks about the reasoning process in the mind and then "
        "provides the User with the answer. The reasoning process and answer are enclosed within "
        "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
        "process here </think> <answer> answer here </answer>. User: {question}. Assistant: <think>",
    )
)
_add(PromptTemplate("chat", "{question}\n" + BOXED_INSTRUCTION, chat=True))
_add(PromptTemplate("qa-short", QA_INSTRUCTION + "\n\n{question}", chat=True))
_add(PromptTemplate("code-complete", "{question}"))
_add(PromptTemplate("code-instruct", CODE_INSTRUCTION + "\n\n{question}", chat=True))


def get_template(name: str) -> PromptTemplate:
    return TEMPLATES.get(name)
