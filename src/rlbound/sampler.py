"""Sampling a run: task → engine → verifier → store, streamed and resumable.

:func:`sample_run` samples ``n`` completions per problem of a task, verifies them and appends them
to a run directory. It is a pipeline of three stages that run at the same time::

    requests (only what the store lacks) ──▶ engine.stream ──▶ verifier thread ──▶ shards
                                              (this thread)      (the verifier pool)

* The engine receives the whole remaining workload as a lazy iterator of
  :class:`~rlbound.engines.base.SampleRequest` and yields completions as they finish (an engine
  with continuous batching keeps thousands in flight; the default streams windows of batches).
* Finished completions go to a bounded queue; a verifier thread grades them in batches
  (:func:`~rlbound.verify.pool.verify_batch`, whose checks run in worker processes) while the
  engine goes on generating. When the queue is full the engine waits (backpressure), so memory is
  bounded whatever the workload's size.
* Verified rows are written as one atomic Parquet shard every ``shard_samples`` samples or
  ``shard_seconds`` seconds, whichever comes first, and at the end.

Each completion's seed is derived from (run seed, problem id, sample index), so rerunning the same
command after an interruption fills exactly the missing (problem, sample index) pairs, and a larger
``n`` tops the run up with the same first samples. A ``kill -9`` loses at most the rows not yet in
a shard; an error or Ctrl-C in the engine (a server gone away) first verifies and writes every
completion already returned, then re-raises. The run's one-writer lock (:mod:`rlbound.runlock`) is
held for the whole call.

What it does not do: it does not retry failed requests (the engines do, where that makes sense),
and it keeps no order among a shard's rows (readers sort by problem and sample index).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rlbound.engines.base import Engine, EngineInfo, Sample, SampleRequest, SamplingParams, sample_seed
from rlbound.images import mark_images
from rlbound.progress import progress
from rlbound.store import RunWriter
from rlbound.tasks.base import Problem, Task, problems_sha256
from rlbound.tasks.templates import get_template
from rlbound.verify.base import STATUS_TIMEOUT, Verifier, verifier_spec
from rlbound.verify.pool import VerifyCache, verify_batch

DEFAULT_SHARD_SAMPLES = 1024
DEFAULT_SHARD_SECONDS = 30.0
VERIFY_BATCH_MAX = 1024  # completions graded together by one verify_batch call
VERIFY_GATHER_S = 0.25  # how long the verifier thread waits to fill a batch


@dataclass
class SampleStats:
    """What one call of :func:`sample_run` did.

    ``engine_busy_s`` is the wall time spent inside the engine (waiting for its next completion);
    ``wall_s - engine_busy_s`` is what the rest of the pipeline cost the engine (backpressure,
    the final verification and write).
    """

    path: Path
    sampled: int
    already_present: int
    timeouts: int
    wall_s: float = 0.0
    engine_busy_s: float = 0.0
    shards: int = 0

    @property
    def engine_busy_share(self) -> float:
        return self.engine_busy_s / self.wall_s if self.wall_s > 0 else float("nan")


def run_config(
    task: Task, template: str, info: EngineInfo, params: SamplingParams, seed: int, verifier: Verifier
) -> dict[str, Any]:
    """The settings that define a run; resuming requires them to be equal."""
    return {
        "task": {"name": task.name, "options": task.options, "problems": len(task),
                 "sha256": problems_sha256(task.problems)},
        "template": template,
        "engine": info.engine,
        "model": info.model,
        "dtype": info.details.get("dtype"),  # samples differ with the weights' format
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
    shard_samples: int = DEFAULT_SHARD_SAMPLES,
    shard_seconds: float = DEFAULT_SHARD_SECONDS,
    verify_timeout_s: float = 5.0,
) -> SampleStats:
    """Fill run directory ``out`` with ``n`` verified samples per problem of ``task``.

    Verified samples are written as one shard every ``shard_samples`` samples or ``shard_seconds``
    seconds (see the module docstring for the pipeline and the resume contract).
    """
    if shard_samples < 1:
        raise ValueError(f"shard_samples must be >= 1, got {shard_samples}")
    if not shard_seconds > 0:
        raise ValueError(f"shard_seconds must be > 0, got {shard_seconds}")
    template_name = template or task.template
    prompt_template = get_template(template_name)
    info = engine.info()
    config = run_config(task, template_name, info, params, seed, verifier)
    started = time.perf_counter()
    with RunWriter(out, config, n, label) as writer:  # holds the run's lock until the end
        writer.save_meta(engine_details=info.details, **({"task_source": task.source} if task.source else {}))
        present = writer.existing_keys()
        todo = [
            (problem, [i for i in range(n) if (problem.id, i) not in present])
            for problem in task.problems
        ]
        todo = [(p, missing) for p, missing in todo if missing]
        total = sum(len(m) for _, m in todo)
        already = len(task) * n - total
        problems = {problem.id: problem for problem, _ in todo}

        def requests() -> Iterator[SampleRequest]:
            for problem, missing in todo:
                question = mark_images(problem.prompt, len(problem.images)) if problem.images else problem.prompt
                prompt = prompt_template.render(question, engine)
                for i in missing:
                    yield SampleRequest((problem.id, i), prompt, sample_seed(seed, problem.id, i),
                                        problem.images)

        pipeline = VerifyAndWrite(writer, verifier, problems, verify_timeout_s,
                                  max(1, min(shard_samples, total)), shard_seconds)
        busy = 0.0
        try:
            with progress("sampling", total=total, unit="samples") as bar:
                shown = 0.0
                stream = engine.stream(requests(), params) if total else iter(())
                while True:
                    t0 = time.perf_counter()
                    try:
                        request, sample = next(stream)
                    except StopIteration:
                        busy += time.perf_counter() - t0
                        break
                    busy += time.perf_counter() - t0
                    pipeline.put(request, sample)
                    bar.advance(1)
                    if time.perf_counter() - shown > 0.5:
                        shown = time.perf_counter()
                        bar.set_postfix(pipeline.describe(already))
                pipeline.finish()
                bar.set_postfix(pipeline.describe(already))
        finally:
            pipeline.finish()  # after an error: verify and write what was generated, then raise
            writer.save_meta(
                samples=len(present) + pipeline.written,
                verify_timeouts=pipeline.timeouts + writer.meta.get("verify_timeouts", 0),
            )
    return SampleStats(Path(out), pipeline.written, already, pipeline.timeouts,
                       wall_s=time.perf_counter() - started, engine_busy_s=busy,
                       shards=pipeline.shards)


class VerifyAndWrite:
    """The verifier thread and the shard writer behind :func:`sample_run` (one per call), and
    behind ``rlbound import`` (:mod:`rlbound.importer`): every stored row is built here."""

    _END = object()

    def __init__(self, writer: RunWriter, verifier: Verifier, problems: dict[str, Problem],
                 verify_timeout_s: float, shard_samples: int, shard_seconds: float):
        self.writer, self.verifier, self.problems = writer, verifier, problems
        self.verify_timeout_s = verify_timeout_s
        self.shard_samples, self.shard_seconds = shard_samples, shard_seconds
        self.cache = VerifyCache()
        self.queue: queue.Queue = queue.Queue(maxsize=max(2 * shard_samples, VERIFY_BATCH_MAX))
        self.generated = self.verified = self.written = self.timeouts = self.shards = 0
        self.error: BaseException | None = None
        self._rows: list[dict[str, Any]] = []
        self._last_write = time.monotonic()
        self._finished = False
        self._thread = threading.Thread(target=self._work, name="rlbound-verify", daemon=True)
        self._thread.start()

    def describe(self, already: int) -> str:
        text = f"verified {self.verified:,} · written {self.written:,}"
        return text + (f" · {already:,} already stored" if already else "")

    def put(self, request: SampleRequest, sample: Sample) -> None:
        """Hand one completion to the verifier thread (waits while the queue is full)."""
        while True:
            self._raise_if_failed()
            try:
                self.queue.put((request, sample), timeout=0.2)
                break
            except queue.Full:
                continue
        self.generated += 1

    def finish(self) -> None:
        """Verify and write everything handed over so far; re-raise the thread's error, if any."""
        if not self._finished:
            self._finished = True
            while self._thread.is_alive():
                try:
                    self.queue.put(self._END, timeout=0.2)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _work(self) -> None:
        try:
            ended = False
            while not ended:
                wait = max(0.05, self.shard_seconds - (time.monotonic() - self._last_write))
                try:
                    batch = [self.queue.get(timeout=wait)]
                except queue.Empty:
                    self._write_if_due()
                    continue
                # Gather a batch (up to VERIFY_BATCH_MAX, waiting at most VERIFY_GATHER_S): few
                # large verify calls hold the GIL less often than many small ones.
                gather_until = time.monotonic() + VERIFY_GATHER_S
                while len(batch) < VERIFY_BATCH_MAX and batch[-1] is not self._END:
                    try:
                        batch.append(self.queue.get(timeout=max(0.0, gather_until - time.monotonic())))
                    except queue.Empty:
                        break
                if batch[-1] is self._END:
                    batch.pop()
                    ended = True
                if batch:
                    self._verify(batch)
                self._write_if_due(force=ended)
        except BaseException as exc:  # noqa: BLE001 - handed to the sampling thread
            self.error = exc
            while True:  # keep the producer from blocking on a full queue
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break

    def _verify(self, batch: list[tuple[SampleRequest, Sample]]) -> None:
        references = [self.verifier.reference_for(self.problems[request.key[0]]) for request, _ in batch]
        verdicts = verify_batch(self.verifier, references, [s.text for _, s in batch],
                                timeout_s=self.verify_timeout_s, cache=self.cache)
        for (request, sample), verdict in zip(batch, verdicts):
            problem_id, idx = request.key
            entropy = sample.entropy_mean
            self._rows.append({
                "problem_id": problem_id,
                "sample_idx": idx,
                "seed": request.seed,
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
            })
        self.verified += len(batch)
        self.timeouts += sum(v.status == STATUS_TIMEOUT for v in verdicts)

    def _write_if_due(self, force: bool = False) -> None:
        """Write full shards; and everything pending when forced or ``shard_seconds`` have passed."""
        timed_out = time.monotonic() - self._last_write >= self.shard_seconds
        while self._rows and (force or timed_out or len(self._rows) >= self.shard_samples):
            rows, self._rows = self._rows[: self.shard_samples], self._rows[self.shard_samples:]
            self.writer.write_shard(rows)
            self.written += len(rows)
            self.shards += 1
            self._last_write = time.monotonic()
        if timed_out:
            self._last_write = time.monotonic()
