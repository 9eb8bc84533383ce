"""N engine replicas as Ray actors, behind one :class:`~rlbound.engines.base.Engine`.

``rlbound sample … --replicas N [--ray-address ADDR] [--gpus-per-replica G]`` wraps the engine it
would have loaded (tiny, hf, vllm, openai) in a :class:`ReplicaEngine`: N Ray actors, each loading
its own copy of the engine with G GPUs (for tensor parallelism inside a replica) and C CPUs. The
streaming sampler sees one engine; what it does with it is unchanged:

* ``stream`` pulls requests lazily from the sampler, cuts them into work units of
  ``unit_requests`` and keeps ``units_in_flight`` units per replica queued (one running, the next
  waiting), so a replica never idles between units and a slow replica simply takes fewer of them.
  Completions come back to the driver (the sampler's process), which alone writes the store: the
  run directory never has two writers.
* Each sample keeps its own seed, so the same run on one process or on N replicas gives the same
  samples (up to floating-point differences between batch shapes, as within one engine).
* A replica that dies (its process killed, its node lost): its unfinished units go back to the
  front of the queue for the others; when none is left the call stops with a one-line error, and
  what the sampler already has is written (rerunning resumes). An error raised by the engine
  itself (a bad prompt, a server's 4xx) is re-raised as it is.
* ``score`` cuts its rows into units the same way and returns them in order (``rlbound score``).

Replicas are Ray Core actors (``ray.remote``); Ray is started on this machine (``ray.init()``, a
local cluster) unless ``ray_address`` names a running cluster (``"auto"`` or ``"ray://host:10001"``),
in which case rlbound and the model must be installed or reachable on its nodes.

What it does not do: it does not restart dead replicas (``max_restarts=0``), does not place
replicas by data locality, does not verify on Ray workers (verification runs in the driver's
verifier pool), and does not shut down a cluster it did not start.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Iterable, Iterator, Sequence

from rlbound.engines.base import (
    Engine,
    EngineInfo,
    Sample,
    SampleRequest,
    SamplingParams,
    TokenScores,
    generate_through_stream,
    load_engine,
)
from rlbound.errors import RlboundError


def _ray():
    try:
        import ray
    except ImportError:
        raise RlboundError("--replicas needs Ray: pip install 'rlbound[ray]'") from None
    return ray


class _Replica:
    """The actor body: one engine, loaded in the actor's process."""

    def __init__(self, engine: str, model: str, options: dict[str, Any]):
        self.engine: Engine | None = None
        self.load_error: str | None = None
        try:
            self.engine = load_engine(engine, model, **options)
        except Exception as exc:  # noqa: BLE001 - reported by ready(), as one line
            self.load_error = str(exc) if isinstance(exc, RlboundError) else f"{type(exc).__name__}: {exc}"

    def ready(self) -> str | None:
        """None once the engine is loaded, else why it could not be."""
        return self.load_error

    def pid(self) -> int:
        return os.getpid()

    def info(self) -> EngineInfo:
        return self.engine.info()

    def batch_size(self) -> int:
        return int(getattr(self.engine, "batch_size", 64))

    def chat_prompt(self, user_message: str) -> str:
        return self.engine.chat_prompt(user_message)

    def generate_requests(self, requests: list[SampleRequest], params: SamplingParams) -> list[Sample]:
        return self.engine.generate_requests(requests, params)

    def score(self, prompts: list[str], completions: list[str]) -> list[TokenScores]:
        return self.engine.score(prompts, completions)


class ReplicaEngine(Engine):
    """``replicas`` copies of engine ``engine`` for ``model``, as Ray actors (module docstring)."""

    def __init__(
        self,
        engine: str,
        model: str,
        options: dict[str, Any] | None = None,
        *,
        replicas: int = 2,
        gpus_per_replica: float = 0,
        cpus_per_replica: float = 1,
        ray_address: str | None = None,
        unit_requests: int | None = None,
        units_in_flight: int = 2,
    ):
        if replicas < 1:
            raise RlboundError(f"--replicas must be >= 1, got {replicas}")
        if gpus_per_replica < 0 or cpus_per_replica < 0:
            raise RlboundError("--gpus-per-replica and --cpus-per-replica must be >= 0")
        if units_in_flight < 1:
            raise RlboundError(f"units_in_flight must be >= 1, got {units_in_flight}")
        ray = _ray()
        options = dict(options or {})
        if engine == "vllm" and gpus_per_replica > 1:
            options.setdefault("tensor_parallel_size", int(gpus_per_replica))
        self.engine_name, self.model_name, self.options = engine, model, options
        self._started_ray = False
        if not ray.is_initialized():
            try:
                ray.init(address=ray_address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except ConnectionError as exc:
                raise RlboundError(f"cannot reach the Ray cluster at {ray_address!r}: {exc}") from None
            self._started_ray = ray_address is None
        actor = ray.remote(max_restarts=0, max_task_retries=0)(_Replica)
        self._actors = [
            actor.options(num_gpus=gpus_per_replica, num_cpus=cpus_per_replica).remote(engine, model, options)
            for _ in range(replicas)
        ]
        try:
            errors = [e for e in ray.get([a.ready.remote() for a in self._actors]) if e]
            if errors:
                raise RlboundError(f"an engine replica could not load its engine: {errors[0]}")
            self._info = ray.get(self._actors[0].info.remote())
            per_replica = ray.get(self._actors[0].batch_size.remote())
            self.pids = ray.get([a.pid.remote() for a in self._actors])
        except Exception as exc:
            self.close()
            raise _as_rlbound_error(exc, "an engine replica failed to start") from None
        self.replicas = replicas
        self.gpus_per_replica, self.cpus_per_replica = gpus_per_replica, cpus_per_replica
        self.batch_size = per_replica * replicas  # what the scorer's chunking sees
        self.unit_requests = unit_requests or 4 * per_replica
        self.units_in_flight = units_in_flight
        self.name = self._info.engine

    # ----------------------------------------------------------------------------- identity
    def info(self) -> EngineInfo:
        """The replicated engine's own identity (so runs resume across replica counts), plus
        how it was replicated."""
        details = {**self._info.details, "replicas": self.replicas,
                   "gpus_per_replica": self.gpus_per_replica}
        return EngineInfo(self._info.engine, self._info.model, details)

    def chat_prompt(self, user_message: str) -> str:
        ray = _ray()
        try:
            return ray.get(self._alive()[0].chat_prompt.remote(user_message))
        except Exception as exc:
            raise _as_rlbound_error(exc, "the replica failed") from None

    # ----------------------------------------------------------------------------- work
    def generate(self, prompts: Sequence[str], params: SamplingParams,
                 seeds: Sequence[Sequence[int]]) -> list[list[Sample]]:
        return generate_through_stream(self, prompts, params, seeds)

    def stream(self, requests: Iterable[SampleRequest],
               params: SamplingParams) -> Iterator[tuple[SampleRequest, Sample]]:
        pending = iter(requests)

        def next_unit() -> list[SampleRequest]:
            unit = []
            for request in pending:
                unit.append(request)
                if len(unit) >= self.unit_requests:
                    break
            return unit

        for unit, samples in self._dispatch(next_unit, lambda actor, unit: actor.generate_requests.remote(unit, params)):
            yield from zip(unit, samples)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[TokenScores]:
        rows = deque(range(len(prompts)))
        size = max(1, -(-len(prompts) // (self.replicas * self.units_in_flight)))

        def next_unit() -> list[int]:
            return [rows.popleft() for _ in range(min(size, len(rows)))]

        out: list[TokenScores | None] = [None] * len(prompts)
        for unit, scores in self._dispatch(next_unit, lambda actor, unit: actor.score.remote(
                [prompts[i] for i in unit], [completions[i] for i in unit])):
            for i, s in zip(unit, scores):
                out[i] = s
        return out  # type: ignore[return-value]

    def _dispatch(self, next_unit, submit) -> Iterator[tuple[list, list]]:
        """Keep ``units_in_flight`` units queued per live replica; yield (unit, results) as they
        finish; hand a dead replica's units to the others."""
        ray = _ray()
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        retry: deque[list] = deque()
        in_flight: dict[Any, tuple[int, list]] = {}  # object ref -> (replica index, unit)
        exhausted = False

        def fill() -> None:
            nonlocal exhausted
            for index, actor in enumerate(self._actors):
                if actor is None:
                    continue
                while sum(1 for r, _ in in_flight.values() if r == index) < self.units_in_flight:
                    unit = retry.popleft() if retry else (None if exhausted else next_unit())
                    if not unit:
                        exhausted = True
                        return
                    in_flight[submit(actor, unit)] = (index, unit)

        fill()
        while in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1)
            ref = done[0]
            index, unit = in_flight.pop(ref)
            try:
                results = ray.get(ref)
            except (RayActorError, ActorDiedError, ActorUnavailableError) as exc:
                self._lose(index, exc)
                retry.appendleft(unit)
                for other in [r for r, (i, _) in in_flight.items() if i == index]:
                    retry.appendleft(in_flight.pop(other)[1])
                if not self._alive(raise_if_none=False):
                    raise RlboundError(
                        f"all {self.replicas} engine replicas died (the last: {_first_line(exc)}); "
                        "the samples already returned are kept: rerun the same command to resume"
                    ) from None
            except Exception as exc:  # the engine's own error, raised inside the replica
                raise _as_rlbound_error(exc, "a replica failed") from None
            else:
                yield unit, results
            fill()

    def _lose(self, index: int, exc: BaseException) -> None:
        from rlbound.progress import note

        self._actors[index] = None
        note(f"warning: engine replica {index} (pid {self.pids[index]}) died ({_first_line(exc)}); "
             "its unfinished work goes to the other replicas")

    def _alive(self, raise_if_none: bool = True) -> list:
        alive = [a for a in self._actors if a is not None]
        if not alive and raise_if_none:
            raise RlboundError("no engine replica is left")
        return alive

    def close(self) -> None:
        ray = _ray()
        for actor in getattr(self, "_actors", []):
            if actor is not None:
                ray.kill(actor)
        self._actors = [None] * len(getattr(self, "_actors", []))
        if self._started_ray and ray.is_initialized():
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _as_rlbound_error(exc: BaseException, what: str) -> RlboundError:
    """The error a replica raised, as the one line a user reads (its cause when Ray wrapped it)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RlboundError):
        return cause
    if isinstance(exc, RlboundError):
        return exc
    return RlboundError(f"{what}: {_first_line(cause or exc)}")
