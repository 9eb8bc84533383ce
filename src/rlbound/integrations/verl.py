"""rlbound's verifiers as verl's reward function (``custom_reward_function``).

Point verl at this module (the ``pkg://`` form makes verl import it as a package module)::

    reward.custom_reward_function.path=pkg://rlbound.integrations.verl
    reward.custom_reward_function.name=compute_score           # one sample per call (naive manager)
    +reward.custom_reward_function.reward_kwargs.verifier=math  # optional: one verifier for all rows

(older verl configs spell it ``custom_reward_function.path=...`` at the top level; for verl's
``batch`` reward manager use ``name=compute_score_batch``, which grades a whole batch at once, each
distinct answer once). verl calls ``compute_score(data_source, solution_str, ground_truth,
extra_info, **reward_kwargs)``; the result is the dict verl accepts: ``score`` (the reward),
``acc`` (the verifier's verdict, 1.0 or 0.0: verl's validation reports ``acc`` as its core metric),
``pred`` (the extracted answer, "" if none; verl's majority voting reads it), ``status`` (the
verifier status) and ``status/<name>`` (1.0 for the sample's status, else 0.0, one key per
status so the fractions of timeouts and unanswered samples show in verl's metrics).

Which verifier grades a sample: ``verifier`` in ``reward_kwargs`` (the whole run), else
``extra_info["verifier"]``, else the data source's (a registered verifier name such as
``"code"``, or a benchmark of :mod:`rlbound.tasks.benchmarks` by name: ``humaneval`` → code),
else ``math``. The spurious rewards (Shao et al. 2025, "Spurious Rewards") by ``reward=``
(``random`` with ``p`` and ``seed``, ``inverse``, ``format_only``, ``incorrect_label`` reading each
problem's wrong label from ``extra_info["incorrect_label"]``), through
:func:`rlbound.train.rewards.make_reward`, as rlbound's own trainer does. Checks run in rlbound's
verifier pool (worker processes, hard kill past ``timeout_s``) with one cache for the process.

:func:`verl_rows` turns an rlbound task into rows of verl's RL dataset format (``data_source``,
``prompt`` as chat messages, ``ability``, ``reward_model.ground_truth``, ``extra_info`` with the
verifier and problem id), to write as the Parquet file verl's ``data.train_files`` reads.

What it does not do: it does not import verl; it does not translate verl's own code-data formats
(a ``code`` ground truth must be an rlbound test spec, as ``rlbound.tasks.code`` builds them); the
random reward's coins are drawn in the order verl scores samples (verl passes no sample index or
step), so they are reproducible only where that order is.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from typing import Any, Mapping, Sequence

from rlbound.errors import RlboundError
from rlbound.train.rewards import make_reward
from rlbound.verify.base import STATUSES, VERIFIERS, Verdict, Verifier, load_verifier
from rlbound.integrations.trl import reference_text
from rlbound.verify.pool import VerifyCache, verify_batch

__all__ = ["compute_score", "compute_score_batch", "verifier_for", "verl_rows"]

DEFAULT_VERIFIER = "math"
LABEL_KEY = "incorrect_label"

_CACHE = VerifyCache()
_VERIFIERS: dict[tuple, Verifier] = {}
_DRAWS: Counter = Counter()  # per (seed, problem): how many random-reward coins were drawn
_LOCK = threading.Lock()


def verifier_for(data_source: Any, extra_info: Mapping[str, Any] | None = None, verifier: str | None = None) -> str:
    """The verifier name for one sample (the order is in the module docstring)."""
    if verifier:
        return str(verifier)
    if extra_info and extra_info.get("verifier"):
        return str(extra_info["verifier"])
    source = str(data_source or "")
    if source in VERIFIERS:
        return source
    try:
        from rlbound.tasks.benchmarks import BENCHMARKS
    except ImportError:  # pragma: no cover - an rlbound without named benchmarks
        BENCHMARKS = {}
    bench = BENCHMARKS.get(source)
    return bench.verifier if bench is not None else DEFAULT_VERIFIER


def _verifier(name: str, options: Mapping[str, Any]) -> Verifier:
    key = (name, tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in options.items())))
    with _LOCK:
        if key not in _VERIFIERS:
            _VERIFIERS[key] = load_verifier(name, **dict(options))
        return _VERIFIERS[key]




def _problem_id(data_source: Any, ground_truth: Any, extra_info: Mapping[str, Any] | None) -> str:
    info = extra_info or {}
    for key in ("problem_id", "id", "index"):
        if info.get(key) is not None:
            return f"{data_source}:{info[key]}"
    return f"{data_source}:{reference_text(ground_truth)}"


def _result(verdict: Verdict, score: float) -> dict[str, Any]:
    out: dict[str, Any] = {"score": float(score), "acc": float(verdict.correct),
                           "pred": "" if verdict.answer is None else str(verdict.answer),
                           "status": verdict.status}
    out.update({f"status/{s}": float(verdict.status == s) for s in STATUSES})
    return out


def compute_score_batch(data_sources: Sequence[Any], solution_strs: Sequence[str], ground_truths: Sequence[Any],
                        extra_infos: Sequence[Mapping[str, Any] | None] | None = None, *,
                        verifier: str | None = None, reward: str = "correct", p: float = 0.5, seed: int = 0,
                        timeout_s: float = 5.0, verifier_options: Mapping[str, Any] | None = None,
                        **ignored: Any) -> list[dict[str, Any]]:
    """One result dict per sample (module docstring), grading each verifier's samples in one
    :func:`~rlbound.verify.verify_batch` call. Keywords verl adds that rlbound does not use
    (``reward_router_address``, ...) are ignored."""
    n = len(solution_strs)
    if len(data_sources) != n or len(ground_truths) != n:
        raise RlboundError(f"compute_score_batch: {len(data_sources)} data sources, {n} solutions and "
                           f"{len(ground_truths)} ground truths; they must match")
    infos = list(extra_infos) if extra_infos is not None else [None] * n
    names = [verifier_for(d, e, verifier) for d, e in zip(data_sources, infos)]
    verdicts: list[Verdict | None] = [None] * n
    for name in sorted(set(names)):
        rows = [i for i in range(n) if names[i] == name]
        graded = verify_batch(_verifier(name, verifier_options or {}), [reference_text(ground_truths[i]) for i in rows],
                              [str(solution_strs[i]) for i in rows], timeout_s=timeout_s, cache=_CACHE)
        for i, verdict in zip(rows, graded):
            verdicts[i] = verdict
    ids = [_problem_id(d, g, e) for d, g, e in zip(data_sources, ground_truths, infos)]
    labels = None
    if reward == "incorrect_label":
        labels = {pid: str(e[LABEL_KEY]) for pid, e in zip(ids, infos) if e and e.get(LABEL_KEY) is not None}
    draws = []
    with _LOCK:
        for pid in ids:
            draws.append(_DRAWS[(seed, pid)])
            _DRAWS[(seed, pid)] += 1
    rewards = make_reward(reward, p=p, seed=seed, labels=labels)(ids, verdicts, step=0, sample_idx=draws)
    return [_result(v, r) for v, r in zip(verdicts, rewards)]


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None,
                  **options: Any) -> dict[str, Any]:
    """verl's per-sample reward function: the result dict of one sample (module docstring).
    ``options`` are ``compute_score_batch``'s keywords (from verl's ``reward_kwargs``)."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **options)[0]


def verl_rows(task, template: str = "chat") -> list[dict[str, Any]]:
    """One verl dataset row per problem of an rlbound task. verl puts every prompt through the
    model's chat template, so ``template`` must be a chat template (``chat``, ``code-instruct``):
    the user message is its text with the question filled in, which is what ``rlbound sample
    --template chat`` sends, so training and measuring see the same prompts."""
    from rlbound.tasks.templates import get_template

    chosen = get_template(template)
    if not chosen.chat:
        raise RlboundError(f"verl_rows: verl applies the model's chat template to every prompt; use a chat "
                           f"template (chat, code-instruct), not {template!r}")
    text = dataclasses.replace(chosen, chat=False)
    ability = {"code": "code", "qa": "qa"}.get(task.verifier, "math")
    return [{"data_source": task.name, "prompt": [{"role": "user", "content": text.render(p.prompt)}],
             "ability": ability, "reward_model": {"style": "rule", "ground_truth": p.reference},
             "extra_info": {"index": i, "problem_id": p.id, "verifier": task.verifier}}
            for i, p in enumerate(task.problems)]
