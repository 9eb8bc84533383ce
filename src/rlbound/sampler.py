"""Sampling a run: task → engine → verifier → store, resumable.

:func:`sample_run` samples ``n`` completions per problem of a task, verifies them and appends them
to a run directory, chunk by chunk. Each completion's seed is derived from (run seed, problem id,
sample index), so rerunning the same command after an interruption fills exactly the missing
(problem, sample index) pairs, and a larger ``n`` tops the run up with the same first samples.
The run's one-writer lock (:mod:`rlbound.runlock`) is held for the whole call: a second sampler
of the same run directory is refused with an error naming the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlbound.engines.base import Engine, EngineInfo, SamplingParams, sample_seed
from rlbound.progress import progress
from rlbound.store import RunWriter
from rlbound.tasks.base import Task
from rlbound.tasks.templates import get_template
from rlbound.verify.base import STATUS_TIMEOUT, Verifier
from rlbound.verify.base import verifier_spec
from rlbound.verify.pool import VerifyCache, verify_batch


@dataclass
class SampleStats:
    """What one call of :func:`sample_run` did."""

    path: Path
    sampled: int
    already_present: int
    timeouts: int


def run_config(
    task: Task, template: str, info: EngineInfo, params: SamplingParams, seed: int, verifier: Verifier
) -> dict[str, Any]:
    """The settings that define a run; resuming requires them to be equal."""
    return {
        "task": {"name": task.name, "options": task.options, "problems": len(task)},
        "template": template,
        "engine": info.engine,
        "model": info.model,
        "sampling": params.to_dict(),
        "seed": seed,
        "verifier": verifier_spec(verifier),
    }


def sample_run(
    out: str | Path,
    task: Task,
    engine: Engine,
    verifier: Verifier,
    params: SamplingParams,
    n: int,
    *,
    seed: int = 0,
    template: str | None = None,
    label: str | None = None,
    chunk_samples: int | None = None,
    verify_timeout_s: float = 5.0,
) -> SampleStats:
    """Fill run directory ``out`` with ``n`` verified samples per problem of ``task``.

    Samples are generated, verified and written in chunks of ``chunk_samples`` (one Parquet shard
    and one progress step each). By default a chunk is four engine batches (64 to 1024 samples),
    so a slow engine still shows progress and loses little to an interruption.
    """
    if chunk_samples is None:
        chunk_samples = min(1024, max(64, 4 * int(getattr(engine, "batch_size", 64))))
    template_name = template or task.template
    prompt_template = get_template(template_name)
    info = engine.info()
    config = run_config(task, template_name, info, params, seed, verifier)
    with RunWriter(out, config, n, label) as writer:  # holds the run's lock until the end
        writer.save_meta(engine_details=info.details)
        present = writer.existing_keys()
        todo = [
            (problem, [i for i in range(n) if (problem.id, i) not in present])
            for problem in task.problems
        ]
        todo = [(p, missing) for p, missing in todo if missing]
        total = sum(len(m) for _, m in todo)
        already = len(task) * n - total
        cache = VerifyCache()
        timeouts = 0
        pairs = [(problem, i) for problem, missing in todo for i in missing]
        with progress("sampling", total=total, unit="samples") as bar:
            if already and total:
                bar.set_postfix(f"{already} already stored")
            for start in range(0, len(pairs), chunk_samples):
                chunk: dict[str, tuple[Any, list[int]]] = {}
                for problem, i in pairs[start : start + chunk_samples]:
                    chunk.setdefault(problem.id, (problem, []))[1].append(i)
                timeouts += _sample_chunk(
                    writer, list(chunk.values()), engine, verifier, params, prompt_template, seed,
                    cache, verify_timeout_s,
                )
                bar.advance(min(chunk_samples, len(pairs) - start))
        writer.save_meta(
            samples=len(present) + total,
            verify_timeouts=timeouts + writer.meta.get("verify_timeouts", 0),
        )
    return SampleStats(Path(out), total, already, timeouts)


def _sample_chunk(
    writer, chunk, engine, verifier, params, prompt_template, seed, cache, verify_timeout_s
) -> int:
    prompts = [prompt_template.render(problem.prompt, engine) for problem, _ in chunk]
    seeds = [[sample_seed(seed, problem.id, i) for i in missing] for problem, missing in chunk]
    outputs = engine.generate(prompts, params, seeds)
    references, completions = [], []
    for (problem, missing), samples in zip(chunk, outputs):
        references += [problem.reference] * len(missing)
        completions += [s.text for s in samples]
    verdicts = verify_batch(
        verifier, references, completions, timeout_s=verify_timeout_s, cache=cache
    )
    rows = []
    k = 0
    for (problem, missing), samples, problem_seeds in zip(chunk, outputs, seeds):
        for idx, sample, s in zip(missing, samples, problem_seeds):
            verdict = verdicts[k]
            k += 1
            entropy = sample.entropy_mean
            rows.append(
                {
                    "problem_id": problem.id,
                    "sample_idx": idx,
                    "seed": s,
                    "completion": sample.text,
                    "token_count": sample.token_count,
                    "finish_reason": sample.finish_reason,
                    "logprob_sum": sample.logprob_sum,
                    "logprob_mean": sample.logprob_mean,
                    "entropy_mean": None if entropy is None or np.isnan(entropy) else entropy,
                    "answer": verdict.answer,
                    "correct": verdict.correct,
                    "verify_status": verdict.status,
                    "correct_base": verdict.correct_base,
                }
            )
    writer.write_shard(rows)
    return sum(v.status == STATUS_TIMEOUT for v in verdicts)
