"""``rlbound lab run``: the whole boundary study on a CPU, as cached, resumable stages.

Stages, in order (each a directory ``OUT/stages/<name>-<key>``, where ``key`` hashes the stage's
own knobs and the keys of the stages it reads, so a changed knob reruns only what depends on it;
a stage that grades samples (evaluation, distillation, self-training, and RL, whose rewards are
verdicts) also hashes its verifiers' settings, rules version included, so new grading rules
rebuild it rather than resume a run graded, or a model trained, under the old ones):

1. ``corpus-base``, ``corpus-teacher``: the two pretraining corpora (``corpus.jsonl`` + stats);
2. ``pretrain-base``, ``pretrain-teacher``: tiny transformers trained from scratch on them, with
   a checkpoint every ``checkpoint_every`` steps (a killed run resumes from the last one);
3. ``distill``: the base model fine-tuned on the teacher's verified-correct samples of fresh
   training problems; ``self-train``: the base model fine-tuned on its own (rejection-sampling
   fine-tuning, the simplest on-policy use of a verifiable reward);
4. ``rl-<label>``: each model of ``rl.start`` (the base model, and/or the distilled one:
   imitation, then RL) trained by each algorithm of ``rl.algorithms`` with ``rl.seeds`` seeds,
   plus the learning rates of ``rl.lr_sweep``, with the policy-gradient loop
   (:func:`rlbound.train.loop.train_rl`) on fresh training problems of both families (a killed
   run resumes from its last checkpoint). Labels (:class:`RLModel`): ``grpo`` (base start, seed
   0: the name lab directories have always used), ``grpo@s1``, ``distilled+grpo``,
   ``nsr@lr3e-05``. ``labels-base`` first, only for the ``incorrect_label`` reward: the base
   model's majority wrong answer per training problem;
5. ``eval-<model>-<family>``: every model sampled ``n`` times per test problem, verified, stored
   (a resumable run directory, topped up after an interruption); ``train-eval-<model>-<family>``:
   the base and RL models on the first ``rl.check_problems`` RL training problems, ``rl.check_samples``
   samples each, so the report can say whether RL learned what it was trained on;
6. the report: ``OUT/report/<family>/report.html`` per family, comparing every model with the
   base model, with pass@k by problem class, each algorithm's spread over seeds against the
   spread between algorithms (:mod:`rlbound.analysis.seeds`), the RL training curves and the
   stage times; ``OUT/lab.json`` sums it up (``summary``: a row per model; ``seeds``: the seed
   comparisons per family; ``schedule``: how long the stages built this time took, side by side).

Every stage is planned before any is built, with the stages it reads; each then starts as soon
as those are finished, in up to ``workers`` processes (so the teacher, self-training and the RL
runs train side by side once the base model exists, and a model's evaluations start as soon as it
is trained); a stage that is alone with nothing running is built in this process, with all its
threads. A stage is finished when its ``stage.json`` exists; anything short of that is resumed or
redone, and a stage that fails stops new ones from starting but not those running beside it.
Only the evaluations hash ``world.test_problems``: train and test problems are disjoint by hash, so
a larger test set reuses every trained model (stages built when all of them hashed it are found
by their spec and reused too).
What it does not do: sample or train anything on the GPU (the tiny engine is CPU-only).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from rlbound.atomic import atomic_write_text
from rlbound.engines.precision import dtype_name, resolve_dtype
from rlbound.errors import RlboundError
from rlbound.lab.config import LabConfig
from rlbound.lab.corpus import (
    DISTILL_OFFSET,
    FAMILIES,
    RL_OFFSET,
    SELF_TRAIN_OFFSET,
    VERIFIER_OF_FAMILY,
    build_corpus,
    check_corpus_config,
    corpus_problem_count,
    corpus_stats,
    lab_task,
)
from rlbound.progress import note, progress

__all__ = ["LabResult", "RLModel", "StageRecord", "read_corpus", "rl_models", "run_lab", "trained_tokens"]

STAGE_FORMAT = 1
STAGE_FILE = "stage.json"


@dataclass
class StageRecord:
    """One stage of a lab run: where it lives, how long it took, whether it came from the cache."""

    name: str
    key: str
    path: str
    wall_s: float
    cached: bool
    info: dict

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "path": self.path, "wall_s": round(self.wall_s, 2),
                "cached": self.cached, **{k: v for k, v in self.info.items() if k != "corpus"}}


@dataclass
class LabResult:
    """What :func:`run_lab` returns."""

    out: Path
    stages: list[StageRecord]
    models: dict[str, str]
    reports: dict[str, Path]
    summary: list[dict]
    schedule: dict
    """The stages built this time: ``workers``, ``built`` (how many), ``wall_s`` (from the first
    to the last) and ``stage_s`` (their own wall times added up; larger than ``wall_s`` when
    stages ran side by side)."""


def _key(name: str, spec: dict) -> str:
    text = json.dumps({"stage": name, "format": STAGE_FORMAT, "spec": spec}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _without_test_set(spec: Any) -> Any:
    """A stored stage spec without ``world.test_problems``: the test set's size, which stages
    other than the evaluations hashed before they stopped depending on it."""
    if isinstance(spec, dict) and isinstance(spec.get("world"), dict):
        spec = {**spec, "world": {k: v for k, v in spec["world"].items() if k != "test_problems"}}
    return spec


class _Stages:
    """The lab's cached stages. ``dtype`` (the resolved number format) joins the spec of every stage
    that trains or samples (``numeric``; not the corpora, whose text it does not change); float32,
    the only format before the knob, is left out, so lab directories built before it resume."""

    def __init__(self, out: Path, dtype: str = "float32"):
        self.root = out / "stages"
        self.records: list[StageRecord] = []
        self.planned: list[_Job] = []
        self.dtype = dtype

    def _built_with_a_test_set(self, name: str, spec: dict) -> tuple[Path, str] | None:
        """A finished stage of this name whose spec equals ``spec`` once its ``world.test_problems``
        is dropped: built before the training stages stopped hashing the test set's size (the
        splits are disjoint by hash, so training never depended on it). Such a stage is reused."""
        if "world" not in spec or "test_problems" in spec["world"] or not self.root.is_dir():
            return None
        wanted = json.loads(json.dumps(spec))
        for path in sorted(self.root.glob(f"{name}-*")):
            key = path.name[len(name) + 1 :]
            if len(key) != 12 or not (path / STAGE_FILE).exists() or not (path / "spec.json").exists():
                continue
            stored = json.loads((path / "spec.json").read_text())
            if "test_problems" in stored.get("world", {}) and _without_test_set(stored) == wanted:
                return path, key
        return None

    def _locate(self, name: str, spec: dict, numeric: bool) -> tuple[dict, str, Path, StageRecord | None]:
        """(the spec as hashed, its key, its directory, the finished stage's record if it exists)."""
        if numeric and self.dtype != "float32":
            spec = {**spec, "dtype": self.dtype}
        key = _key(name, spec)
        path = self.root / f"{name}-{key}"
        if not (path / STAGE_FILE).exists():
            path, key = self._built_with_a_test_set(name, spec) or (path, key)
        if not (path / STAGE_FILE).exists():
            return spec, key, path, None
        stored = json.loads((path / STAGE_FILE).read_text())
        note(f"[dim]stage {name}: reused ({path.name}, {stored['wall_s']:.0f} s when built)[/dim]")
        return spec, key, path, StageRecord(name, key, str(path), stored["wall_s"], True, stored.get("info", {}))

    def _begin(self, spec: dict, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "spec.json", json.dumps(spec, indent=1, sort_keys=True) + "\n")

    def _finish(self, name: str, key: str, path: Path, info: dict, wall: float) -> StageRecord:
        atomic_write_text(path / STAGE_FILE, json.dumps({"name": name, "key": key, "wall_s": wall, "info": info},
                                                        indent=1) + "\n")
        return StageRecord(name, key, str(path), wall, False, info)

    def _build_here(self, name: str, spec: dict, key: str, path: Path, build: Callable[[Path], dict]) -> StageRecord:
        note(f"[bold]stage {name}[/bold] ({path.name})")
        self._begin(spec, path)
        t0 = time.perf_counter()
        info = _with_threads(build(path))
        return self._finish(name, key, path, info, time.perf_counter() - t0)

    def plan(self, name: str, spec: dict, function: Callable, args: tuple = (), needs: tuple = (),
             numeric: bool = True) -> "_Job":
        """Queue the stage ``name``, built by ``function(*args, path)`` (module-level, so that a
        worker process can run it) once the stages named in ``needs`` are; returns the job, whose
        ``path`` is known before it is built (a stage's directory follows from its spec)."""
        spec, key, path, record = self._locate(name, spec, numeric)
        job = _Job(name, spec, key, path, function, args, tuple(needs), record)
        self.planned.append(job)
        return job

    def build(self, workers: int) -> dict[str, StageRecord]:
        """Build every planned stage not built yet, each as soon as the stages it needs are, up to
        ``workers`` at a time in separate processes sharing the cores,
        the first planned first; records (in plan order) by name. A stage that is the only one
        that can run, with none running, is built here with all of this process's threads (every
        other stage waits for it); so is one that every other pending stage needs, once the
        stages running beside it are finished. A worker's threads follow the stages running
        in workers (:class:`_CoreShare`): one stage alone there gets every core. After a failure
        no stage starts; those running are finished and kept, then the error is raised."""
        jobs, self.planned = self.planned, []
        records = {job.name: job.record for job in jobs if job.record is not None}
        pending = [job for job in jobs if job.record is None]
        running: dict = {}  # future -> job
        processes = max(1, min(workers, len(pending)))
        failure: BaseException | None = None
        with ExitStack() as stack:
            bars = stack.enter_context(ExitStack())  # the bar of the stages running in workers
            pool = bar = None
            while (pending and failure is None) or running:
                ready = [job for job in pending if all(n in records for n in job.needs)] if failure is None else []
                if len(ready) == 1 and running and _blocks_the_rest(ready[0], pending):
                    ready = []  # wait for the running ones, then build it here with every thread
                if ready and not running and (processes == 1 or len(ready) == 1):
                    job = ready[0]
                    pending.remove(job)
                    records[job.name] = self._build_here(job.name, job.spec, job.key, job.path,
                                                         lambda p, j=job: j.function(*j.args, p))
                    continue
                if not ready and not running:  # a need that was never planned: a bug, not bad input
                    stuck = pending[0]
                    raise RuntimeError(f"stage {stuck.name} needs {', '.join(n for n in stuck.needs if n not in records)}, "
                                       "which no planned stage builds")
                if pool is None:
                    running_count = _spawn_context().RawValue("i", 0)
                    pool = stack.enter_context(_worker_pool(processes, running_count))
                if bar is None:
                    bar = bars.enter_context(progress(f"stages ({processes} processes)", total=len(pending)
                                                           + len(running), unit="stages"))
                starting = ready[: processes - len(running)]
                running_count.value = len(running) + len(starting)  # before they start: each reads its share
                for job in starting:
                    pending.remove(job)
                    self._begin(job.spec, job.path)
                    note(f"[bold]stage {job.name}[/bold] ({job.path.name}) in a worker process")
                    running[pool.submit(_timed_build, job.function, (*job.args, job.path))] = job
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                done = [(future, running.pop(future)) for future in finished]
                running_count.value = len(running)  # the workers still running take up the cores
                for future, job in done:
                    try:
                        info, wall = future.result()
                    except BaseException as exc:  # noqa: BLE001 - raised once the running ones are kept
                        failure = failure or exc
                        continue
                    records[job.name] = self._finish(job.name, job.key, job.path, info, wall)
                    note(f"stage {job.name}: {wall:.0f} s")
                    bar.advance(1)
                if not running:
                    bars.close()
                    bar = None
        if failure is not None:
            raise failure
        ordered = [records[job.name] for job in jobs]
        self.records.extend(ordered)
        return {record.name: record for record in ordered}


def _blocks_the_rest(job: "_Job", pending: list["_Job"]) -> bool:
    """Whether every other pending stage needs ``job``, directly or through others (the base
    model's pretraining): then nothing could run beside it, and in a worker it would run on
    that worker's share of the threads alone."""
    others = [other for other in pending if other is not job]
    by_name = {other.name: other for other in pending}
    blocked: dict[str, bool] = {job.name: True}

    def needs_job(other: "_Job") -> bool:
        if other.name not in blocked:
            blocked[other.name] = False  # a cycle cannot make it True
            blocked[other.name] = any(n in by_name and needs_job(by_name[n]) for n in other.needs)
        return blocked[other.name]

    return bool(others) and all(needs_job(other) for other in others)


@dataclass
class _Job:
    """A planned stage: its spec as hashed, key and directory, how to build it, what it needs."""

    name: str
    spec: dict
    key: str
    path: Path
    function: Callable
    args: tuple
    needs: tuple
    record: StageRecord | None  # set when the stage was built before


def _worker_pool(processes: int, running) -> ProcessPoolExecutor:
    """``processes`` spawned workers sharing the cores by ``running``, the count of stages
    running in them (a ``RawValue`` of :func:`_spawn_context`, kept by the caller)."""
    return ProcessPoolExecutor(processes, mp_context=_spawn_context(), initializer=_worker_setup,
                               initargs=(running, os.getpid()))


def _spawn_context():
    import multiprocessing

    return multiprocessing.get_context("spawn")  # no fork of a process that runs OpenMP threads


MAX_WORKERS = 8
"""Most worker processes by default (each holds its own torch and model in memory)."""


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Torch threads of each of ``workers`` processes sharing ``cores`` (default: this machine's)."""
    return max(1, (usable_cores() if cores is None else cores) // max(1, workers))


class _CoreShare:
    """In a worker process: its torch threads, kept at its share of the cores among the stages
    running in workers (a count the parent keeps in shared memory), checked at the start of each
    stage and at every progress-bar advance; so a stage left running alone, or beside fewer
    others, takes up the cores the finished ones left. ``most``: the most threads the current
    stage has had."""

    def __init__(self, running, cores: int):
        self.running, self.cores, self.threads, self.most = running, cores, 0, 0

    def update(self) -> None:
        threads = threads_per_worker(self.running.value, self.cores)
        if threads != self.threads:
            import torch

            torch.set_num_threads(threads)
            self.threads = threads
            self.most = max(self.most, threads)

    def start_stage(self) -> None:
        self.update()
        self.most = self.threads


_SHARE: _CoreShare | None = None  # set in worker processes


PARENT_CHECK_S = 1.0
"""How often a worker checks that the lab process that started it is still there."""


def _exit_with_parent(parent: int) -> None:
    """End this worker process once ``parent`` is gone (killed, not shut down): a stage left
    building on its own would race the stage a resumed run builds in the same directory."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="rlbound-lab-parent", daemon=True).start()


def _worker_setup(running, parent: int) -> None:
    global _SHARE
    from rlbound.progress import set_heartbeat, set_quiet

    _exit_with_parent(parent)
    set_quiet(True)  # the parent draws one bar for all the stages
    _SHARE = _CoreShare(running, usable_cores())
    _SHARE.update()
    set_heartbeat(_SHARE.update)


def _timed_build(function: Callable, args: tuple) -> tuple[dict, float]:
    t0 = time.perf_counter()
    if _SHARE is not None:
        _SHARE.start_stage()
    info = _with_threads(function(*args))
    return info, time.perf_counter() - t0


def _with_threads(info: dict | None) -> dict:
    """A stage's info with the most torch threads it was built with (its wall time depends on
    them; a stage in a worker gains threads when stages beside it finish)."""
    import torch

    threads = torch.get_num_threads() if _SHARE is None else _SHARE.most
    return {**(info or {}), "threads": threads}


# ------------------------------------------------------------------------------- the stages


def _graders(families) -> dict:
    """What grades each family's samples: the verifier's name and settings (rules version and
    backend included), as the sampler records them. Part of the key of every stage that samples
    and grades, so new grading rules give a fresh stage instead of resuming (or reusing) a run
    graded under the old ones, which the store would refuse to top up."""
    from rlbound.verify.base import load_verifier, verifier_spec

    return {family: verifier_spec(load_verifier(VERIFIER_OF_FAMILY[family])) for family in families}


def _write_corpus(config: LabConfig, which: str, path: Path) -> dict:
    corpus = getattr(config, which)
    with progress(f"{which}: writing traces", total=corpus_problem_count(corpus), unit="problems") as bar:
        examples = build_corpus(config.world, corpus, where=which, progress_bar=bar)
    lines = [json.dumps({"prompt": e.prompt, "completion": e.completion, "family": e.family,
                         "strategy": e.strategy, "class": e.problem_class, "solved": e.solved})
             for e in examples]
    atomic_write_text(path / "corpus.jsonl", "\n".join(lines) + "\n")
    return {"traces": len(examples), "corpus": corpus_stats(examples)}


def read_corpus(stage_dir: str | Path) -> list[tuple[str, str]]:
    """The (prompt, completion) pairs a corpus stage wrote."""
    with open(Path(stage_dir) / "corpus.jsonl") as handle:
        return [(row["prompt"], row["completion"]) for row in map(json.loads, handle)]


def trained_tokens(pairs: list[tuple[str, str]], batch_size: int, steps: int) -> float:
    """Tokens ``steps`` steps of ``batch_size`` examples see on average (characters + BOS + EOS)."""
    return sum(len(p) + len(c) + 2 for p, c in pairs) / len(pairs) * batch_size * steps


def _pretrain(config: LabConfig, which: str, corpus_dir: str, start: str | None, path: Path) -> dict:
    """Train on the corpus stage in ``corpus_dir`` from ``start`` (a model directory) or, when
    None, from scratch."""
    from rlbound.engines.tiny.model import TinyConfig
    from rlbound.engines.tiny.train import train_next_token

    train = getattr(config, which)
    pairs = read_corpus(corpus_dir)
    result = train_next_token(
        start or TinyConfig(**config.model.shape()), pairs, steps=train.steps, batch_size=train.batch_size, lr=train.lr,
        warmup=train.warmup, seed=train.seed, out_dir=path / "model",
        checkpoint_dir=path / "checkpoint", checkpoint_every=train.checkpoint_every,
        description=which.replace("_", " "), dtype=config.model.dtype, compile=train.compile,
    )
    shutil.rmtree(path / "checkpoint", ignore_errors=True)
    tokens = trained_tokens(pairs, train.batch_size, result.steps)
    return {"final_loss": round(result.final_loss, 4), "train_wall_s": round(result.wall_s, 1),
            "tokens_per_s": round(tokens / max(result.wall_s, 1e-9))}


def _sampling_params(config: LabConfig, temperature: float | None = None):
    from rlbound.engines.base import SamplingParams

    return SamplingParams(temperature=config.sampling.temperature if temperature is None else temperature,
                          max_tokens=config.sampling.max_tokens)


def _finetune_on_correct(config: LabConfig, which: str, sampler_dir: str, student_dir: str,
                         offset: int, path: Path) -> dict:
    """Sample ``sampler_dir`` on fresh training problems; fine-tune ``student_dir`` on the correct."""
    from rlbound.distill import correct_examples
    from rlbound.engines.base import load_engine
    from rlbound.engines.tiny.train import train_next_token
    from rlbound.sampler import sample_run
    from rlbound.store import load_run
    from rlbound.tasks.templates import get_template
    from rlbound.verify.base import load_verifier

    settings = getattr(config, which)
    engine = load_engine("tiny", sampler_dir, dtype=config.model.dtype)
    pairs, offered = [], 0
    for family in FAMILIES:
        task = lab_task(family, config.world, settings.problems, split="train", offset=offset)
        run_dir = path / f"samples-{family}"
        sample_run(run_dir, task, engine, load_verifier(task.verifier),
                   _sampling_params(config, settings.temperature), settings.samples,
                   seed=config.sampling.seed + 1, label=f"{which}: {family} training problems")
        template = get_template(task.template)
        prompts = {p.id: template.render(p.prompt) for p in task.problems}
        rows = load_run(run_dir).table.to_pylist()
        offered += len(rows)
        pairs += correct_examples(rows, prompts)  # the rule `rlbound distill` applies
    if not pairs:
        raise RlboundError(f"{which}: no training sample was correct, nothing to fine-tune on; "
                           "train the sampling model longer")
    result = train_next_token(
        student_dir, pairs, steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
        warmup=settings.warmup, seed=config.sampling.seed, out_dir=path / "model",
        description=which.replace("_", " "), dtype=config.model.dtype,
    )
    return {"examples": len(pairs), "offered": offered, "final_loss": round(result.final_loss, 4)}


def _evaluation_stage(config: LabConfig, model_dir: str, family: str, label: str, check: bool, path: Path) -> dict:
    """An ``eval`` stage (the test problems, ``sampling.n`` samples) or, with ``check``, a
    ``train-eval`` one (the RL check); module-level so that a worker process can run it."""
    if check:
        task = next(t for t in rl_tasks(config, config.rl.check_problems) if t.name == family)
        return _evaluate(config, model_dir, task, label, path, n=config.rl.check_samples)
    return _evaluate(config, model_dir, lab_task(family, config.world, config.world.test_problems), label, path)


def _evaluate(config: LabConfig, model_dir: str, task, label: str, path: Path, n: int | None = None) -> dict:
    from rlbound.analysis.passk import pass_at_k
    from rlbound.engines.base import load_engine
    from rlbound.sampler import sample_run
    from rlbound.store import load_run
    from rlbound.verify.base import load_verifier

    stats = sample_run(path / "run", task, load_engine("tiny", model_dir, dtype=config.model.dtype),
                       load_verifier(task.verifier),
                       _sampling_params(config), n or config.sampling.n, seed=config.sampling.seed,
                       label=f"{label} on {task.name}")
    run = load_run(path / "run").samples
    return {"sampled": stats.sampled, "pass@1": round(float(pass_at_k(run.n, run.c, 1).mean()), 4)}


# ------------------------------------------------------------------------------- RL stages

_RL_KNOBS = ("steps", "prompts_per_step", "group_size", "lr", "max_tokens", "dsrl_switch", "reward", "seed")
RL_STARTS = ("base", "distilled")


def lr_text(lr: float) -> str:
    """A learning rate as a label: ``3e-05``, ``1.5e-04`` (mantissa without trailing zeros)."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"


@dataclass(frozen=True)
class RLModel:
    """One RL model of the lab: its algorithm, start model, seed offset and (for the sweep) learning rate.

    ``label``: ``[start+]algo[@lr<rate>][@s<seed>]``, e.g. ``grpo`` (seed 0 from the base model, the
    label lab directories have always used), ``grpo@s1``, ``distilled+grpo``, ``nsr@lr3e-05``;
    ``group``: the label without the seed, what the seeds of one configuration share.
    """

    algo: str
    start: str = "base"
    seed: int = 0
    lr: float | None = None

    @property
    def group(self) -> str:
        prefix = "" if self.start == "base" else f"{self.start}+"
        return prefix + self.algo + ("" if self.lr is None else f"@lr{lr_text(self.lr)}")

    @property
    def label(self) -> str:
        return self.group + (f"@s{self.seed}" if self.seed else "")


def rl_models(config: LabConfig) -> list[RLModel]:
    """Every RL model ``config`` trains: each start x algorithm x seed, then the learning-rate sweep
    (base start, seed offset 0; a rate equal to ``rl.lr`` of a trained algorithm is that model)."""
    rl = config.rl
    models = [RLModel(algo, start, s) for start in rl.start for algo in rl.algorithms for s in range(rl.seeds)]
    for algo, rates in rl.lr_sweep.items():
        for lr in rates:
            if not (algo in rl.algorithms and "base" in rl.start and math.isclose(lr, rl.lr, rel_tol=1e-9)):
                models.append(RLModel(algo, "base", 0, float(lr)))
    return models


def trainer_config(config: LabConfig, algo: str, seed_offset: int = 0, lr: float | None = None):
    """The :class:`TrainerConfig` the lab trains ``algo`` with (``rl`` knobs, then ``rl.trainer``);
    ``seed_offset`` is added to ``rl.seed``, ``lr`` replaces ``rl.lr`` (the sweep)."""
    from dataclasses import fields

    from rlbound.train.config import TrainerConfig

    rl = config.rl
    known = {f.name for f in fields(TrainerConfig)} - {"algo"}
    for key in rl.trainer:
        if key in _RL_KNOBS:
            raise RlboundError(f"rl.trainer.{key}: set rl.{key} itself instead")
        if key not in known:
            raise RlboundError(f"rl.trainer: unknown trainer knob {key!r}; knobs are {', '.join(sorted(known))}")
    knobs = {k: getattr(rl, k) for k in _RL_KNOBS}
    knobs["seed"] = rl.seed + seed_offset
    if lr is not None:
        knobs["lr"] = lr
    try:
        return TrainerConfig(algo=algo, temperature=config.sampling.temperature, dtype=config.model.dtype,
                             **knobs, **rl.trainer)
    except TypeError as exc:
        raise RlboundError(f"rl.trainer: {exc}") from None


def check_rl_config(config: LabConfig) -> None:
    """Raise a one-line error naming the knob if ``config.rl`` asks for something impossible."""
    from rlbound.train.algorithms import ALGORITHMS, SCHEDULES
    from rlbound.train.rewards import REWARDS

    rl = config.rl
    known = [*ALGORITHMS, *SCHEDULES]
    for algo in rl.algorithms:
        if algo not in known:
            raise RlboundError(f"rl.algorithms: unknown algorithm {algo!r}; choose from {', '.join(known)}")
    if not rl.families or any(f not in FAMILIES for f in rl.families):
        raise RlboundError(f"rl.families: {rl.families!r}; choose one or more of {', '.join(FAMILIES)}")
    if len(set(rl.algorithms)) != len(rl.algorithms):
        raise RlboundError("rl.algorithms: an algorithm is listed twice")
    if rl.reward not in REWARDS.names():
        raise RlboundError(f"rl.reward: unknown reward {rl.reward!r}; choose from {', '.join(REWARDS.names())}")
    for name, least in (("problems", 1), ("check_problems", 0), ("check_samples", 1)):
        if getattr(rl, name) < least:
            raise RlboundError(f"rl.{name} must be >= {least}, got {getattr(rl, name)}")
    if rl.check_problems > rl.problems:
        raise RlboundError(f"rl.check_problems ({rl.check_problems}) cannot exceed rl.problems ({rl.problems})")
    if rl.seeds < 1:
        raise RlboundError(f"rl.seeds must be >= 1, got {rl.seeds}")
    for start in rl.start:
        if start not in RL_STARTS:
            raise RlboundError(f"rl.start: unknown start model {start!r}; choose from {', '.join(RL_STARTS)}")
    if not rl.start:
        raise RlboundError(f"rl.start is empty; choose one or more of {', '.join(RL_STARTS)}")
    if len(set(rl.start)) != len(rl.start):
        raise RlboundError("rl.start: a start model is listed twice")
    if "distilled" in rl.start and not config.distill.enabled:
        raise RlboundError("rl.start: 'distilled' needs the distilled model; set distill.enabled = true")
    _check_lr_sweep(rl, known)
    for model in rl_models(config):
        trainer_config(config, model.algo, model.seed, model.lr)


def _check_lr_sweep(rl, known: list[str]) -> None:
    for algo, rates in rl.lr_sweep.items():
        if algo not in known:
            raise RlboundError(f"rl.lr_sweep: unknown algorithm {algo!r}; choose from {', '.join(known)}")
        if not isinstance(rates, list) or not all(
                isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r > 0 for r in rates):
            raise RlboundError(f"rl.lr_sweep.{algo} must be a list of learning rates > 0, got {rates!r}")
        if len({float(r) for r in rates}) != len(rates):
            raise RlboundError(f"rl.lr_sweep.{algo}: a learning rate is listed twice")


def rl_tasks(config: LabConfig, n: int | None = None) -> list:
    """The RL training problems of the ``rl.families`` (the first ``n`` of each, default all)."""
    count = config.rl.problems if n is None else n
    return [lab_task(f, config.world, count, split="train", offset=RL_OFFSET) for f in config.rl.families]


def _base_labels(config: LabConfig, base_dir: str, path: Path) -> dict:
    """The base model's most frequent wrong answer per RL training problem (the incorrect_label reward)."""
    from rlbound.train.labels import labels_from_run

    labels: dict[str, str] = {}
    for task in rl_tasks(config):
        _evaluate(config, base_dir, task, "labels: base", path / task.name, n=config.rl.group_size)
        labels.update(labels_from_run(path / task.name / "run"))
    atomic_write_text(path / "labels.json", json.dumps(labels, indent=0, sort_keys=True) + "\n")
    return {"labelled": len(labels), "problems": config.rl.problems * len(config.rl.families)}


def _train_rl(config: LabConfig, model: RLModel, start_dir: str, labels_dir: str | None, path: Path) -> dict:
    from rlbound.train.loop import train_rl

    labels = json.loads((Path(labels_dir) / "labels.json").read_text()) if labels_dir else None
    result = train_rl(start_dir, rl_tasks(config), trainer_config(config, model.algo, model.seed, model.lr),
                      path / "train", description=f"rl {model.label}", labels=labels)
    metrics = result.metrics
    head, tail = metrics[:5], metrics[-5:]
    mean = lambda rows, key: round(sum(m.get(key, 0.0) for m in rows) / max(len(rows), 1), 4)  # noqa: E731
    return {"steps": len(metrics), "rollout_accuracy_first5": mean(head, "accuracy"),
            "rollout_accuracy_last5": mean(tail, "accuracy"), "kl_last5": mean(tail, "kl"),
            "kl_k1_last5": mean(tail, "kl_k1"), "entropy_last5": mean(tail, "entropy"),
            "s_per_step": mean(metrics, "wall_s")}


# --------------------------------------------------------------------------------- the run


def run_lab(out: str | Path, config: LabConfig, preset_name: str = "default", workers: int | None = None) -> LabResult:
    """Run (or resume) the lab in ``out``; return where everything is. ``workers``: processes
    that build stages side by side, each as soon as what it reads exists (default: one per usable
    core, at most :data:`MAX_WORKERS`; 1 builds every stage here, one after the other)."""
    from rlbound.report.html import write_report
    from rlbound.store import load_run
    from rlbound.train.loop import read_metrics

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for which in ("base_corpus", "teacher_corpus"):
        check_corpus_config(getattr(config, which), which)
    if config.pretrain.init != "scratch" or config.teacher_pretrain.init not in ("scratch", "base"):
        raise RlboundError("pretrain.init must be 'scratch'; teacher_pretrain.init 'scratch' or 'base'")
    check_rl_config(config)
    workers = min(usable_cores(), MAX_WORKERS) if workers is None else workers
    if workers < 1:
        raise RlboundError(f"lab: workers must be >= 1, got {workers}")
    # "auto" becomes the format it means on this machine, recorded in lab.json and the stage specs
    fmt = dtype_name(resolve_dtype(config.model.dtype, "cpu", what="model.dtype"))
    config = replace(config, model=replace(config.model, dtype=fmt))
    stages = _Stages(out, fmt)
    test_world = config.world.as_dict()  # the evaluations' problems
    world = _without_test_set({"world": test_world})["world"]  # the training stages': disjoint from them
    # every stage is planned first, with the stages it reads; build() then starts each one as soon
    # as those exist (the teacher, self-training and RL side by side, each model's evaluations as
    # soon as it is trained), the first planned first
    corpora = {
        which: stages.plan(f"corpus-{which.split('_')[0]}", {"world": world, "corpus": getattr(config, which).as_dict()},
                           _write_corpus, (config, which), numeric=False)
        for which in ("base_corpus", "teacher_corpus")
    }
    models: dict[str, tuple[str, _Job]] = {}  # name -> (model dir, the stage that trains it)
    for name, corpus, train in (("base", "base_corpus", "pretrain"), ("teacher", "teacher_corpus", "teacher_pretrain")):
        start = models["base"] if getattr(config, train).init == "base" else None
        job = stages.plan(
            f"pretrain-{name}",
            {"corpus": corpora[corpus].key, "model": config.model.shape(),
             "train": getattr(config, train).as_dict(), "start": start and start[1].key},
            _pretrain, (config, train, str(corpora[corpus].path), start and start[0]),
            needs=(corpora[corpus].name, *(start and [start[1].name] or [])),
        )
        models[name] = (str(job.path / "model"), job)
    base_dir, base_job = models["base"]
    for name, which, sampler, offset in (("distilled", "distill", "teacher", DISTILL_OFFSET),
                                         ("self-trained", "self_train", "base", SELF_TRAIN_OFFSET)):
        if not getattr(config, which).enabled:
            continue
        job = stages.plan(
            which.replace("_", "-"),
            {"student": base_job.key, "sampler": models[sampler][1].key, "world": world,
             "settings": getattr(config, which).as_dict(), "sampling": config.sampling.as_dict(),
             "graders": _graders(FAMILIES)},
            _finetune_on_correct, (config, which, models[sampler][0], base_dir, offset),
            needs=(base_job.name, models[sampler][1].name),
        )
        models[name] = (str(job.path / "model"), job)
    labels = None
    trained = rl_models(config)
    if trained and config.rl.reward == "incorrect_label":
        labels = stages.plan("labels-base", {"base": base_job.key, "world": world, "rl": _labels_rl_spec(config),
                                             "sampling": config.sampling.as_dict(),
                                             "graders": _graders(config.rl.families)},
                             _base_labels, (config, base_dir), needs=(base_job.name,))
    for m in trained:
        start_dir, start_job = models[m.start]
        job = stages.plan(
            f"rl-{m.label}",
            {"base": start_job.key, "world": world, "problems": config.rl.problems,  # "base": the start
             "families": config.rl.families, "trainer": _trainer_spec(config, m),
             "labels": labels and labels.key, "graders": _graders(config.rl.families)},
            _train_rl, (config, m, start_dir, labels and str(labels.path)),
            needs=(start_job.name, *(labels and [labels.name] or [])),
        )
        models[m.label] = (str(job.path / "train" / "model"), job)

    test_tasks = {f: lab_task(f, config.world, config.world.test_problems) for f in FAMILIES}
    # every model on the test problems, then the RL check (base and RL models on training problems)
    evaluations = [(name, family, False) for name in models for family in FAMILIES]
    if trained and config.rl.check_problems:
        starts = ["base", *(s for s in config.rl.start if s != "base")]  # what each RL model is compared with
        evaluations += [(name, family, True) for name in [*starts, *(m.label for m in trained)]
                        for family in config.rl.families]
    eval_jobs = []
    for name, family, check in evaluations:
        model_dir, model_job = models[name]
        if check:
            spec = {"model": model_job.key, "world": world, "problems": config.rl.check_problems,
                    "samples": config.rl.check_samples, "sampling": config.sampling.as_dict(),
                    "graders": _graders([family])}
        else:
            spec = {"model": model_job.key, "world": test_world, "sampling": config.sampling.as_dict(),
                    "graders": _graders([family])}
        eval_jobs.append(stages.plan(f"{'train-eval' if check else 'eval'}-{name}-{family}", spec, _evaluation_stage,
                                     (config, model_dir, family, name, check), needs=(model_job.name,)))
    started = time.perf_counter()
    stages.build(workers)
    built = [r for r in stages.records if not r.cached]
    schedule = {"workers": workers, "built": len(built), "wall_s": round(time.perf_counter() - started, 1),
                "stage_s": round(sum(r.wall_s for r in built), 1)}  # stage_s / wall_s: the overlap

    training = {m.label: read_metrics(models[m.label][1].path / "train") for m in trained}  # for the report
    runs_by_family: dict[str, list] = {f: [] for f in FAMILIES}
    train_runs: dict[str, list] = {f: [] for f in FAMILIES}
    for (name, family, check), job in zip(evaluations, eval_jobs):
        runs = train_runs if check else runs_by_family
        runs[family].append(load_run(job.path / "run").samples)
        runs[family][-1].label = name

    stage_rows = [r.as_dict() for r in stages.records]
    reports, summary, seeds = {}, [], {}
    seed_groups = _seed_groups(config, trained)
    for family, runs in runs_by_family.items():
        groups = {p.id: p.metadata["class"] for p in test_tasks[family].problems}
        reports[family] = write_report(
            runs, out / "report" / family, title=f"rlbound lab ({preset_name}): {family}",
            groups=groups, stages=stage_rows, training=training, seed_groups=seed_groups,
        )
        summary += _summary_rows(family, runs, train_runs[family], {m.label: m for m in trained}, config)
        seeds[family] = json.loads((reports[family].parent / "results.json").read_text())["seeds"]
    record = {"preset": preset_name, "config": config.as_dict(), "stages": stage_rows, "schedule": schedule,
              "models": {k: v[0] for k, v in models.items()},
              "reports": {k: str(v) for k, v in reports.items()}, "summary": summary, "seeds": seeds}
    atomic_write_text(out / "lab.json", json.dumps(record, indent=1) + "\n")
    return LabResult(out, stages.records, {k: v[0] for k, v in models.items()}, reports, summary, schedule)


def _trainer_spec(config: LabConfig, model: RLModel) -> dict:
    """The trainer knobs an RL stage hashes: float32, the only format before the ``dtype`` knob,
    is left out, so lab directories built before it resume their RL stages."""
    spec = trainer_config(config, model.algo, model.seed, model.lr).as_dict()
    if spec.get("dtype") == "float32":
        del spec["dtype"]
    return spec


def _labels_rl_spec(config: LabConfig) -> dict:
    """The ``rl`` knobs the incorrect labels depend on, as the labels stage has always hashed them
    (the knobs added since, which only choose which RL models to train, left out)."""
    return {k: v for k, v in config.rl.as_dict().items() if k not in ("start", "seeds", "lr_sweep")}


def _seed_groups(config: LabConfig, trained: list[RLModel]) -> dict[str, dict[str, list[str]]]:
    """The report's seed comparisons: every RL configuration (algorithm x start, the learning-rate
    sweep left out) with its labels over seeds; with several starts and algorithms, also the
    algorithms compared at each start alone."""
    every: dict[str, list[str]] = {}
    by_start: dict[str, dict[str, list[str]]] = {}
    for model in trained:
        if model.lr is None:
            every.setdefault(model.group, []).append(model.label)
            by_start.setdefault(model.start, {}).setdefault(model.group, []).append(model.label)
    if not every:
        return {}
    sets = {"every RL configuration (algorithm x start model)" if len(by_start) > 1 else "every RL algorithm": every}
    if len(by_start) > 1 and len(config.rl.algorithms) > 1:
        sets.update({f"RL from the {start} model": groups for start, groups in by_start.items()})
    # the claim "the algorithms perform alike" is about these; NSR-style objectives that collapse
    # would make any comparison over every algorithm "distinguishable" on their account alone
    alike = {group: labels for group, labels in by_start.get("base", {}).items() if group in LARGE_K_ALGORITHMS}
    if len(alike) >= 2 and len(alike) < len(by_start.get("base", {})):
        sets["the large-k study's algorithms (" + ", ".join(alike) + ")"] = alike
    return sets


LARGE_K_ALGORITHMS = ("ppo", "grpo", "reinforce_pp", "rloo", "remax", "dapo")
"""The RL algorithms the large-k pass@k study compared from one base model and found to perform
alike (Yue et al., 2025: PPO, GRPO, REINFORCE++, RLOO, ReMax, DAPO); the report compares them
among themselves over seeds as well as with every algorithm."""


def _summary_rows(family: str, runs: list, train_runs: list, rl_info: dict | None = None,
                  config: LabConfig | None = None) -> list[dict]:
    """One row per model: pass@1 and pass@k (k = n) with 95% bands, coverage at k against the
    base model (problems only it / only the base solves), ΔSE against the base, the paired
    differences from the base (``delta_pass@1``, ``delta_pass@k``, ``gained``, ``lost``, ``net``,
    each with ``_ci``; ``includes_zero`` lists those whose interval includes 0), for an RL model
    started from another model the same differences from that model (``vs_start``: each as
    ``[value, lo, hi]``), and, for the
    models the RL check sampled, training-set pass@1. RL models (``rl_info``: label → RLModel)
    say under ``rl`` what trained them: algorithm, start model, seed and learning rate."""
    from rlbound.analysis.coverage import coverage
    from rlbound.analysis.differences import paired_differences
    from rlbound.analysis.efficiency import sampling_efficiency_gap
    from rlbound.analysis.passk import pass_at_k_curve

    base = runs[0]
    k = int(min(int(run.n.min()) for run in runs))
    trained = {run.label: run for run in train_runs}
    by_label = {run.label: run for run in runs}
    rows = []
    for run in runs:
        curve = pass_at_k_curve(run, ks=[1, k])
        (p1, p1_lo, p1_hi), (pk, pk_lo, pk_hi) = curve.at(1), curve.at(k)
        cover = coverage(run, base, k)
        gap = sampling_efficiency_gap(base, run, k_ref=k)
        row = {"family": family, "model": run.label, "problems": len(run), "k": k,
               "pass@1": p1, "pass@1_ci": [p1_lo, p1_hi], f"pass@{k}": pk, f"pass@{k}_ci": [pk_lo, pk_hi],
               "solved": cover.solved_a, "only_model": len(cover.a_only), "only_base": len(cover.b_only),
               "delta_se": gap.delta, "delta_se_ci": [gap.lo, gap.hi]}
        if run is not base:  # the model minus the base, each with its paired interval
            diffs = paired_differences(base, run, k)
            for name, d in diffs.differences.items():
                row[name], row[f"{name}_ci"] = d.value, [d.lo, d.hi]
            row["includes_zero"] = diffs.flagged()
        if run.label in trained and base.label in trained:
            check = pass_at_k_curve(trained[run.label], ks=[1])
            row["train_pass@1"], lo, hi = check.at(1)
            row["train_pass@1_ci"] = [lo, hi]
        model = (rl_info or {}).get(run.label)
        if model is not None and config is not None:
            row["rl"] = {"algorithm": model.algo, "start": model.start, "group": model.group,
                         "seed": config.rl.seed + model.seed, "lr": config.rl.lr if model.lr is None else model.lr}
            start = by_label.get(model.start)
            if model.start != base.label and start is not None:  # RL after imitation vs imitation alone
                diffs = paired_differences(start, run, k)
                row["vs_start"] = {"model": model.start, "includes_zero": diffs.flagged(),
                                   **{name: [d.value, d.lo, d.hi] for name, d in diffs.differences.items()}}
        rows.append(row)
    return rows
