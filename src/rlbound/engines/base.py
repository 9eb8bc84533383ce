"""The engine protocol: prompts in, sampled completions (with per-token statistics) out.

Every engine (the built-in tiny transformer, Hugging Face transformers, later vLLM and
OpenAI-compatible servers) implements :class:`Engine`:

* ``generate(prompts, params, seeds)`` samples ``len(seeds[i])`` completions for prompt ``i``.
  Each completion has its own integer seed, and the same (prompt, seed, params, weights) gives the
  same completion whatever else is in the batch, so a resumed or extended run reproduces.
* ``stream(requests, params)`` takes an iterable of :class:`SampleRequest` (prompt, seed, and a
  key of the caller's) and yields ``(request, sample)`` pairs as completions finish, in any order.
  It pulls requests lazily, so a caller can hand it the whole remaining workload: an engine with
  continuous batching (vLLM, a server) keeps as many requests in flight as it can batch, and the
  default (:meth:`Engine.stream`) feeds ``generate`` windows of ``stream_window()`` requests.
* ``score(prompts, completions)`` returns the per-token log-probabilities of each completion
  given its prompt (for perplexity), with full-vocabulary entropies where the engine can.

Engines register a factory by name with ``@register_engine("tiny")``; the factory takes the model
location and engine options. This module holds the shared types, the seed derivation, and the
top-K entropy bound that engines seeing only the most likely tokens record (:func:`top_k_entropy`).
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Hashable, Iterable, Iterator, Sequence

from rlbound.errors import RlboundError
from rlbound.registry import Registry


@dataclass(frozen=True)
class SamplingParams:
    """How to sample; validated at construction (bad values raise :class:`RlboundError`).

    ``top_k = 0`` and ``top_p = 1.0`` disable those filters; ``temperature = 0`` is greedy.
    ``stop`` strings end a completion (the stop string itself is kept out of the text).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise RlboundError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise RlboundError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise RlboundError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.max_tokens < 1:
            raise RlboundError(f"max_tokens must be >= 1, got {self.max_tokens}")
        object.__setattr__(self, "stop", tuple(self.stop))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class Sample:
    """One sampled completion and its per-token statistics.

    ``finish_reason`` is ``"stop"`` (end-of-sequence token or a stop string) or ``"length"``
    (``max_tokens`` reached). ``token_logprobs`` are the log-probabilities, under the sampling
    distribution before temperature/top-k/top-p are applied, of the tokens produced;
    ``token_entropies`` the full-vocabulary entropies (nats) of the same untempered
    distributions, or ``None`` where the engine cannot compute them.
    """

    text: str
    token_ids: list[int]
    finish_reason: str
    token_logprobs: list[float]
    token_entropies: list[float] | None = None

    @property
    def token_count(self) -> int:
        return len(self.token_ids)

    @property
    def logprob_sum(self) -> float:
        """Sum of the token log-probabilities; NaN when the engine reported none (a server
        that returns no log-probs), never a 0.0 that would read as certainty."""
        if not self.token_logprobs and self.token_ids:
            return float("nan")
        return float(sum(self.token_logprobs))

    @property
    def logprob_mean(self) -> float:
        return self.logprob_sum / len(self.token_logprobs) if self.token_logprobs else float("nan")

    @property
    def entropy_mean(self) -> float | None:
        if self.token_entropies is None or not self.token_entropies:
            return None
        return float(sum(self.token_entropies) / len(self.token_entropies))


@dataclass
class TokenScores:
    """Per-token log-probabilities of a given completion after a given prompt."""

    token_ids: list[int]
    token_logprobs: list[float]
    token_entropies: list[float] | None = None


@dataclass(frozen=True)
class SampleRequest:
    """One sample to draw: ``prompt`` sampled with ``seed``; ``key`` is the caller's own handle
    (the sampler uses ``(problem_id, sample_idx)``) and comes back with the sample. ``images``
    are the problem's images (paths or bytes, :mod:`rlbound.images`), one ``<image>`` mark each
    in ``prompt``; engines that take text only refuse them (:func:`refuse_images`)."""

    key: Hashable
    prompt: str
    seed: int
    images: tuple[str | bytes, ...] = ()


@dataclass
class EngineInfo:
    """What ``run.json`` records about an engine: its name, model and identifying details."""

    engine: str
    model: str
    details: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    """Base class of all engines (see the module docstring for the contract)."""

    name: str = "engine"
    accepts_images: bool = False  # engines that pass SampleRequest.images to the model say so

    @abstractmethod
    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seeds: Sequence[Sequence[int]]
    ) -> list[list[Sample]]:
        """Sample ``len(seeds[i])`` completions of ``prompts[i]``, one per seed, in seed order."""

    def stream_window(self) -> int:
        """Requests the default :meth:`stream` hands ``generate`` at once (4 batches)."""
        return 4 * max(1, int(getattr(self, "batch_size", 64)))

    def stream(
        self, requests: Iterable[SampleRequest], params: SamplingParams
    ) -> Iterator[tuple[SampleRequest, Sample]]:
        """Yield ``(request, sample)`` for every request, as completions finish.

        The default takes ``stream_window()`` requests at a time from ``requests`` and samples them
        with :meth:`generate_requests`; engines that batch continuously override it.
        """
        window: list[SampleRequest] = []
        for request in requests:
            window.append(request)
            if len(window) >= self.stream_window():
                yield from zip(window, self.generate_requests(window, params))
                window = []
        if window:
            yield from zip(window, self.generate_requests(window, params))

    def generate_requests(
        self, requests: Sequence[SampleRequest], params: SamplingParams
    ) -> list[Sample]:
        """One sample per request, in request order, through :meth:`generate` (requests of the
        same prompt are grouped, so an engine that prefills a prompt once per batch does so)."""
        refuse_images(self, requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.prompt, []).append(i)
        prompts = list(groups)
        outputs = self.generate(prompts, params, [[requests[i].seed for i in groups[p]] for p in prompts])
        samples: list[Sample | None] = [None] * len(requests)
        for prompt, produced in zip(prompts, outputs):
            for i, sample in zip(groups[prompt], produced):
                samples[i] = sample
        return samples  # type: ignore[return-value]

    def close(self) -> None:
        """Release what the engine holds (processes, connections); the default holds nothing."""

    @abstractmethod
    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[TokenScores]:
        """Per-token log-probabilities of ``completions[i]`` following ``prompts[i]``."""

    @abstractmethod
    def info(self) -> EngineInfo:
        """Identify the engine and model for the run record."""

    def chat_prompt(self, user_message: str) -> str:
        """Render ``user_message`` with the model's own chat template.

        Engines whose tokenizer carries a chat template override this; the rest refuse.
        """
        raise RlboundError(f"engine {self.name!r} has no chat template; choose another --template")


EngineFactory = Callable[..., Engine]
ENGINES: Registry[EngineFactory] = Registry(
    "engine",
    lazy={"tiny": "rlbound.engines.tiny", "hf": "rlbound.engines.hf", "vllm": "rlbound.engines.vllm",
          "openai": "rlbound.engines.openai"},
)
register_engine = ENGINES.register


def load_engine(name: str, model: str, **options: Any) -> Engine:
    """Build the engine registered as ``name`` for ``model`` (a path or name)."""
    return ENGINES.get(name)(model, **options)


def generate_through_stream(engine: "Engine", prompts: Sequence[str], params: SamplingParams,
                            seeds: Sequence[Sequence[int]]) -> list[list[Sample]]:
    """``generate`` for engines whose native interface is :meth:`Engine.stream` (servers,
    replicas): one request per (prompt, seed), results put back in prompt and seed order."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seed lists")
    requests = [SampleRequest((i, j), prompt, int(seed))
                for i, prompt in enumerate(prompts) for j, seed in enumerate(seeds[i])]
    out: list[list[Sample | None]] = [[None] * len(s) for s in seeds]
    for request, sample in engine.stream(requests, params):
        i, j = request.key
        out[i][j] = sample
    return out  # type: ignore[return-value]


def top_k_entropy(logprobs: Iterable[float | None]) -> float:
    """Entropy (nats) of the given outcomes plus the rest of the mass as one more outcome.

    For engines that see only a token's top-K log-probabilities (vLLM, servers): merging outcomes
    can only lower entropy, so this is a lower bound of the full-vocabulary entropy (runs record
    ``"token_entropy": {"method": "top-k", "k": K}`` so reports say so). ``None`` and ``-inf``
    entries are skipped.
    """
    probs = [math.exp(lp) for lp in logprobs if lp is not None and lp > -math.inf]
    entropy = -sum(p * math.log(p) for p in probs if p > 0)
    rest = 1.0 - sum(probs)
    if rest > 1e-12:
        entropy -= rest * math.log(rest)
    return max(entropy, 0.0)


def refuse_images(engine: "Engine", requests: Iterable[SampleRequest]) -> None:
    """Refuse, in one line, requests with images given to an engine that takes text only."""
    if engine.accepts_images:
        return
    for request in requests:
        if request.images:
            raise RlboundError(
                f"engine {engine.name!r} takes text only, but request {request.key!r} comes with "
                f"{len(request.images)} image(s): sample visual tasks with -e hf (an image-text "
                "model) or -e vllm")


def check_engine_options(engine: str, options: Iterable[str], accepted: Iterable[str]) -> None:
    """Refuse an option ``engine`` does not accept, naming the ones it does (one line)."""
    accepted = sorted(set(accepted))
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise RlboundError(f"engine {engine!r} has no option {unknown[0]!r} (it accepts: "
                           f"{', '.join(accepted)}); pass engine options as -E KEY=VALUE")


def sample_seed(run_seed: int, problem_id: str, sample_idx: int) -> int:
    """The seed of one sample: a 63-bit hash of (run seed, problem id, sample index).

    Independent of batch composition and of how many samples were drawn before, so topping up a
    run from n = 64 to n = 256 reproduces the first 64 samples exactly.
    """
    key = f"{run_seed}\x1f{problem_id}\x1f{sample_idx}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
