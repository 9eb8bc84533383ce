"""rlbound's verifiers as reward functions for TRL's ``GRPOTrainer``.

::

    from trl import GRPOConfig, GRPOTrainer
    from rlbound.integrations.trl import math_reward, task_rows
    from rlbound.tasks.base import load_task

    dataset = Dataset.from_list(task_rows(load_task("math500")))   # prompt, answer, problem_id
    trainer = GRPOTrainer(model=..., reward_funcs=[math_reward(answer_field="answer")],
                          args=GRPOConfig(...), train_dataset=dataset)

Each factory returns a :class:`VerifierReward`: a callable with TRL's reward-function signature
``(prompts, completions, completion_ids, **columns)`` (the dataset's other columns arrive as
keyword lists, one value per completion; completions are plain strings or, for conversational
datasets, lists of message dicts) and a ``__name__`` TRL logs it under. It grades every batch
with :func:`rlbound.verify.verify_batch`: extraction in the training process, each distinct
(reference, answer) checked once in the verifier pool's worker processes with a hard kill past
``timeout_s``, verdicts cached across steps. The reward of a verdict comes from
:func:`rlbound.train.rewards.make_reward`, the same functions rlbound's own trainer uses: the
true reward (``correct``) and the spurious ones of Shao et al. 2025, "Spurious Rewards:
Rethinking Training Signals in RLVR" (``random``, ``inverse``, ``format_only``,
``incorrect_label``).

What TRL shows: through the ``log_metric`` hook TRL passes to reward functions (checked with TRL 1.16),
each batch logs ``verdicts/<name>/<status>`` (the fraction of completions with each verifier
status: ok, no_answer, timeout, error, and any other status seen) and ``verdicts/<name>/correct``
(the verifier's accuracy, which under a spurious reward differs from the reward); through
``log_extra`` the completions table gets each sample's status and extracted answer. Outside TRL
the same numbers are kept on the object (``status_counts``, ``last_verdicts``).

What this module does not do: it does not import TRL (any caller with that signature works),
does not route one dataset to several verifiers (use one reward function per verifier, each
returning rewards for all rows), and passes no images (:func:`task_rows` keeps text prompts only).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any, Mapping, Sequence

from rlbound.errors import RlboundError
from rlbound.train.rewards import REWARDS, make_reward
from rlbound.verify.base import (
    STATUS_ERROR,
    STATUS_NO_ANSWER,
    STATUS_OK,
    STATUS_TIMEOUT,
    Verdict,
    Verifier,
    load_verifier,
)
from rlbound.verify.pool import DEFAULT_MEMORY_LIMIT_MB, VerifierPool, VerifyCache, verify_batch

__all__ = [
    "VerifierReward",
    "code_reward",
    "completion_text",
    "exact_reward",
    "format_only_reward",
    "incorrect_label_reward",
    "inverse_reward",
    "math_reward",
    "qa_reward",
    "random_reward",
    "task_rows",
    "verifier_reward",
]

#: Statuses logged for every batch, even at 0 (others are logged once they have been seen).
LOGGED_STATUSES = (STATUS_OK, STATUS_NO_ANSWER, STATUS_TIMEOUT, STATUS_ERROR)
#: Keyword arguments TRL passes that are not dataset columns.
_TRL_EXTRAS = ("trainer_state", "log_metric", "log_extra", "environments")
#: Columns tried, in order, for a problem id when ``problem_id_field`` is not given.
_ID_COLUMNS = ("problem_id", "id")


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a string as is; a conversational completion (a list of
    message dicts) as its assistant messages' contents joined by newlines (content blocks of type
    ``text`` are joined; a list without roles counts every message)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if not isinstance(completion, Sequence):
        raise RlboundError(f"reward: a completion must be a string or a list of messages, got "
                           f"{type(completion).__name__}")
    messages = [m for m in completion if isinstance(m, Mapping)]
    if any("role" in m for m in messages):
        messages = [m for m in messages if m.get("role") == "assistant"]
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, Sequence):
            parts.extend(str(b.get("text", "")) for b in content
                         if isinstance(b, Mapping) and b.get("type", "text") == "text")
    return "\n".join(parts)


def reference_text(value: Any) -> str:
    """A dataset cell as a verifier reference: strings unchanged, lists and dicts as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _problem_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)


class VerifierReward:
    """A TRL reward function grading completions with one rlbound verifier (module docstring).

    Args:
        verifier: a registered verifier name (``"math"``, ``"exact"``, ``"code"``, ``"qa"``...)
            or a :class:`~rlbound.verify.base.Verifier` instance.
        answer_field: the dataset column holding each problem's reference (for ``code``, the
            test spec JSON that :func:`task_rows` writes from an rlbound code task).
        reward: a name of :data:`rlbound.train.rewards.REWARDS` (``correct``, ``random``,
            ``inverse``, ``format_only``, ``incorrect_label``).
        name: the ``__name__`` TRL logs (default ``rlbound_<verifier>`` plus the reward name
            when it is not ``correct``).
        problem_id_field: the column naming each problem (the random reward's coins and the
            incorrect labels are per problem); default ``problem_id`` or ``id`` where present,
            else the prompt itself.
        p, seed: the ``random`` reward's success probability and seed.
        labels / label_field: the ``incorrect_label`` reward's wrong answer per problem id, or
            the column holding it.
        timeout_s, workers, memory_limit_mb, pool, cache: passed to
            :func:`~rlbound.verify.verify_batch` (``cache`` defaults to one kept for the object's
            life, so a verdict is computed once per run).
        verifier_options: the verifier's constructor options (``load_verifier(name, **options)``).
    """

    def __init__(self, verifier: str | Verifier = "math", *, answer_field: str = "answer",
                 reward: str = "correct", name: str | None = None,
                 problem_id_field: str | None = None, p: float = 0.5, seed: int = 0,
                 labels: Mapping[str, str] | None = None, label_field: str | None = None,
                 timeout_s: float = 5.0, workers: int | None = None,
                 memory_limit_mb: float | None = DEFAULT_MEMORY_LIMIT_MB,
                 pool: VerifierPool | None = None, cache: VerifyCache | None = None,
                 verifier_options: Mapping[str, Any] | None = None):
        self.verifier = (verifier if isinstance(verifier, Verifier)
                         else load_verifier(verifier, **dict(verifier_options or {})))
        REWARDS.get(reward)  # an unknown name fails here, with the known ones listed
        if reward == "incorrect_label" and labels is None and label_field is None:
            raise RlboundError("reward 'incorrect_label' needs labels={problem id: wrong answer} or "
                               "label_field=<the dataset column holding each problem's wrong answer>")
        self.reward, self.answer_field, self.problem_id_field = reward, answer_field, problem_id_field
        self.label_field = label_field
        # With label_field the labels arrive with each batch, so that reward is built per call.
        self._reward_fn = None if labels is None and label_field is not None else make_reward(
            reward, p=p, seed=seed, labels=labels)
        self._options = {"p": p, "seed": seed}
        default = f"rlbound_{self.verifier.name}" + ("" if reward == "correct" else f"_{reward}")
        self.__name__ = name or default
        self.timeout_s, self.workers, self.memory_limit_mb = timeout_s, workers, memory_limit_mb
        self.pool = pool
        self.cache = VerifyCache() if cache is None else cache
        self.status_counts: Counter = Counter()
        self.last_verdicts: list[Verdict] = []

    def __repr__(self) -> str:
        return f"VerifierReward({self.verifier.name!r}, reward={self.reward!r}, name={self.__name__!r})"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] | None = None,
                 completion_ids: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
        extras = {k: kwargs.pop(k, None) for k in _TRL_EXTRAS}
        if completions is None:
            raise RlboundError(f"reward {self.__name__}: called without completions")
        n = len(completions)
        if self.answer_field not in kwargs:
            raise RlboundError(f"reward {self.__name__}: the dataset has no column "
                               f"{self.answer_field!r} (columns: {', '.join(sorted(kwargs)) or 'none'}); "
                               "pass answer_field=<the reference column>")
        references = [reference_text(v) for v in kwargs[self.answer_field]]
        texts = [completion_text(c) for c in completions]
        verdicts = verify_batch(self.verifier, references, texts, timeout_s=self.timeout_s,
                                workers=self.workers, cache=self.cache, pool=self.pool,
                                memory_limit_mb=self.memory_limit_mb)
        state = extras["trainer_state"]
        step = int(getattr(state, "global_step", 0) or 0)
        ids = self._problem_ids(prompts, kwargs, n)
        reward_fn = self._reward_fn
        if self.label_field is not None:
            if self.label_field not in kwargs:
                raise RlboundError(f"reward {self.__name__}: the dataset has no column {self.label_field!r}")
            labels = {pid: str(lab) for pid, lab in zip(ids, kwargs[self.label_field]) if lab is not None}
            reward_fn = make_reward(self.reward, labels=labels, **self._options)
        rewards = [float(r) for r in reward_fn(ids, verdicts, step=step)]
        self._log(verdicts, extras["log_metric"], extras["log_extra"])
        return rewards

    def _problem_ids(self, prompts, columns: Mapping[str, Sequence[Any]], n: int) -> list[str]:
        field = self.problem_id_field or next((c for c in _ID_COLUMNS if c in columns), None)
        if field is not None:
            if field not in columns:
                raise RlboundError(f"reward {self.__name__}: the dataset has no column {field!r}")
            return [str(v) for v in columns[field]]
        if prompts is None:
            return [str(i) for i in range(n)]
        return [_problem_key(p) for p in prompts]

    def _log(self, verdicts: Sequence[Verdict], log_metric, log_extra) -> None:
        statuses = [v.status for v in verdicts]
        counts = Counter(statuses)
        self.status_counts.update(counts)
        self.last_verdicts = list(verdicts)
        n = max(len(verdicts), 1)
        if log_metric is not None:
            shown = list(LOGGED_STATUSES) + sorted(set(self.status_counts) - set(LOGGED_STATUSES))
            for status in shown:
                log_metric(f"verdicts/{self.__name__}/{status}", counts.get(status, 0) / n)
            log_metric(f"verdicts/{self.__name__}/correct", sum(v.correct for v in verdicts) / n)
        if log_extra is not None:
            log_extra(f"{self.__name__}/status", statuses)
            log_extra(f"{self.__name__}/answer", ["" if v.answer is None else v.answer for v in verdicts])


def verifier_reward(verifier: str | Verifier, answer_field: str = "answer", **options: Any) -> VerifierReward:
    """A reward function for any registered verifier (see :class:`VerifierReward`)."""
    return VerifierReward(verifier, answer_field=answer_field, **options)


def math_reward(answer_field: str = "answer", **options: Any) -> VerifierReward:
    """1 when the completion's final answer is mathematically equal to the reference (the
    ``math`` verifier: Math-Verify), else 0."""
    return VerifierReward("math", answer_field=answer_field, **options)


def exact_reward(answer_field: str = "answer", **options: Any) -> VerifierReward:
    """1 when the final answer equals the reference as a normalised string or exact number."""
    return VerifierReward("exact", answer_field=answer_field, **options)


def code_reward(answer_field: str = "answer", **options: Any) -> VerifierReward:
    """1 when the completion's program passes every test of the reference test spec (the ``code``
    verifier, sandboxed); build the dataset with :func:`task_rows` from an rlbound code task."""
    return VerifierReward("code", answer_field=answer_field, **options)


def qa_reward(answer_field: str = "answer", **options: Any) -> VerifierReward:
    """1 when a short factual answer matches the reference (the ``qa`` verifier)."""
    return VerifierReward("qa", answer_field=answer_field, **options)


def random_reward(verifier: str | Verifier = "math", *, p: float = 0.5, seed: int = 0,
                  **options: Any) -> VerifierReward:
    """Spurious: Bernoulli(``p``) per sample, independent of the answer (the verdicts are still
    computed, so TRL logs the true accuracy beside the reward)."""
    return VerifierReward(verifier, reward="random", p=p, seed=seed, **options)


def inverse_reward(verifier: str | Verifier = "math", **options: Any) -> VerifierReward:
    """Spurious control: 1 for a wrong answer, 0 for a right one."""
    return VerifierReward(verifier, reward="inverse", **options)


def format_only_reward(verifier: str | Verifier = "math", **options: Any) -> VerifierReward:
    """Spurious: 1 whenever the verifier could extract an answer, right or wrong."""
    return VerifierReward(verifier, reward="format_only", **options)


def incorrect_label_reward(verifier: str | Verifier = "math", *, labels: Mapping[str, str] | None = None,
                           label_field: str | None = None, **options: Any) -> VerifierReward:
    """Spurious: 1 when the answer equals a fixed wrong label of its problem (``labels`` by
    problem id, e.g. :func:`rlbound.train.rewards.majority_wrong_labels` of the base model's
    samples, or a dataset column ``label_field``)."""
    return VerifierReward(verifier, reward="incorrect_label", labels=labels, label_field=label_field,
                          **options)


def task_rows(task, template: str | None = None, answer_field: str = "answer") -> list[dict[str, Any]]:
    """One TRL dataset row per problem of an rlbound :class:`~rlbound.tasks.base.Task`:
    ``prompt`` (rendered with the task's template, or ``template``, exactly as ``rlbound
    sample`` renders it; a chat template becomes a conversational prompt, one user message, for
    TRL to put through the model's own chat template), the reference under ``answer_field`` and
    ``problem_id``. Use ``datasets.Dataset.from_list(task_rows(task))``."""
    from rlbound.tasks.templates import get_template

    chosen = get_template(template or task.template)
    text = dataclasses.replace(chosen, chat=False)
    rows = []
    for problem in task.problems:
        body = text.render(problem.prompt)
        prompt: Any = [{"role": "user", "content": body}] if chosen.chat else body
        rows.append({"prompt": prompt, answer_field: problem.reference, "problem_id": problem.id})
    return rows
