"""The OpenAI-compatible server engine: sample from any server that speaks the OpenAI API.

Registered as ``"openai"``; ``model`` is the *served* model name. Works with ``vllm serve``,
SGLang, llama.cpp's server, TGI and hosted APIs through the official ``openai`` client
(``import openai`` below is the real client: this module is ``rlbound.engines.openai``, and Python
3 has no implicit relative imports). Options (``-E KEY=VALUE``), see :class:`OpenAIOptions`:
``base_url`` (or env ``OPENAI_BASE_URL``), ``api_key_env`` (the *name* of the variable holding the
key; the key itself is never recorded), ``endpoint`` (``completions`` or ``chat``),
``concurrency``, ``timeout_s``, ``max_retries``, ``retry_backoff_s``, ``logprobs``,
``top_logprobs``, ``server`` and ``extra_body``.

What it does:

* One request per sample, with the sample's own ``seed`` (servers that honour it, as vLLM does,
  then reproduce a sample exactly). ``stream`` pulls requests lazily from the sampler, keeps
  ``concurrency`` of them in flight (an asyncio loop in a background thread) and yields each
  completion as it arrives; when ``concurrency`` completions wait untaken it sends nothing new.
* Retries with exponential backoff (``retry_backoff_s``, doubling, at most 30 s, honouring
  ``Retry-After``) on timeouts, connection errors, 408/409/429 and 5xx. When a request still fails,
  no new request is sent, every completion already received is yielded, and then a one-line
  :class:`RlboundError` says the server stopped answering; the sampler stores what it got, and
  rerunning the command resumes. Any other 4xx (a wrong model name, a prompt too long) is one
  line quoting the server's message; the model name is checked when the engine is built
  (``/v1/models``, then one tiny request to obtain the server's own words if it is not listed).
* ``endpoint=completions`` sends the rendered prompt text (rlbound's text templates). With
  ``endpoint=chat`` the server applies the model's chat template: ``chat_prompt`` marks the user
  message and each request sends it as the one user message of ``/v1/chat/completions``; a
  prompt from a text template is refused there (it would be wrapped in a chat template twice),
  and ``chat_prompt`` is refused with ``endpoint=completions`` (no tokenizer here to render it).
* ``token_logprobs`` are the sampled tokens' log-probabilities as the server reports them (vLLM's
  default ``--logprobs-mode raw_logprobs`` is the untempered distribution, rlbound's contract;
  other servers or modes may report the processed one); none requested (``logprobs=false``) or
  none returned gives an empty list, so the stored ``logprob_mean`` is NaN. With
  ``top_logprobs=K`` each token's entropy is computed over the top-K alternatives (and the sampled
  token) plus the remaining probability mass as one bucket: a lower bound of the full-vocabulary
  entropy. Otherwise ``token_entropies`` is ``None``.
* ``token_ids`` come from the server where it returns them (vLLM's ``return_token_ids``);
  elsewhere they are ``-1`` placeholders, one per generated token (so ``token_count`` stays
  right), counted from the returned log-probs or the request's ``usage``.
* ``score`` (vLLM-style servers only, ``server=vllm``): prompt and completion are tokenised
  *separately* by the server's ``/tokenize`` (the prompt without special tokens, then one BOS
  where the tokenizer adds one and the text lacks it: the HF engine's rule), the concatenated ids
  are sent as the prompt of ``/v1/completions`` with ``echo`` and ``logprobs=0``, and the
  completion's positions are read back. A chat-marked prompt is tokenised by the server's own
  chat template (what ``/v1/chat/completions`` conditions on). No entropies (``None``).

What it does not do: batch several samples into one request (``n``), use streaming responses,
check that the server really honours ``seed`` or reports untempered log-probs, score on servers
without ``/tokenize`` and ``echo`` (refused), score a prompt + completion filling the whole
context (vLLM wants one free position), or send more than one user message in chat mode. A text
prompt that itself begins with the BOS token's text is scored with one BOS (the HF engine's rule)
although vLLM's ``/v1/completions`` adds a second one when it samples from that text.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Awaitable, Callable, Iterable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import openai

from rlbound.engines.base import (
    Engine,
    EngineInfo,
    Sample,
    SampleRequest,
    SamplingParams,
    TokenScores,
    check_engine_options,
    generate_through_stream,
    refuse_images,
    register_engine,
    top_k_entropy,
)
from rlbound.errors import RlboundError

CHAT_MARKER = "<|rlbound-chat-user|>"  # chat_prompt's mark: "send the rest as one user message"
RETRY_STATUSES = {408, 409, 429}  # and every 5xx
MAX_BACKOFF_S = 30.0
ENDPOINTS = ("completions", "chat")
SERVER_KINDS = ("auto", "vllm", "openai")
# Request fields the engine sets from rlbound's own flags: extra_body may not override them, so
# run.json's sampling settings stay true.
RESERVED_FIELDS = {"model", "prompt", "messages", "seed", "temperature", "top_p", "top_k", "max_tokens",
                   "max_completion_tokens", "stop", "logprobs", "top_logprobs", "echo", "n", "stream"}


@dataclass(frozen=True)
class OpenAIOptions:
    """The engine's options; each is an ``-E KEY=VALUE`` key."""

    base_url: str | None = None
    """Server URL including ``/v1`` (default: env ``OPENAI_BASE_URL``); a bare host gets ``/v1``."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key (a local server may need none)."""
    endpoint: str = "completions"
    """``completions`` (raw prompts, rlbound's text templates) or ``chat`` (the server's template)."""
    concurrency: int = 64
    """Requests in flight at once (and at most as many finished ones waiting for the sampler)."""
    timeout_s: float = 600.0
    """Per request, each attempt."""
    max_retries: int = 3
    """Retries of a request after a timeout, connection error, 408/409/429 or 5xx."""
    retry_backoff_s: float = 1.0
    """First retry delay; doubles each retry (at most 30 s), or the server's Retry-After."""
    logprobs: bool = True
    """Ask for the sampled tokens' log-probabilities."""
    top_logprobs: int = 0
    """K > 0: per-token entropy lower bound from the top-K log-probs (vLLM allows K <= 20)."""
    server: str = "auto"
    """``vllm``: the server takes vLLM's extra fields (top_k, return_token_ids) and has /tokenize;
    ``openai``: the plain OpenAI API only; ``auto``: vllm if ``/v1/models`` says owned_by vllm."""
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Further JSON fields sent with every request (server-specific settings)."""

    @classmethod
    def from_engine_options(cls, options: dict[str, Any]) -> "OpenAIOptions":
        check_engine_options("openai", options, [f.name for f in fields(cls)])
        values = dict(options)
        if isinstance(values.get("extra_body"), str):
            try:
                values["extra_body"] = json.loads(values["extra_body"])
            except json.JSONDecodeError:
                raise RlboundError("engine option extra_body must be a JSON object, e.g. "
                                   "-E 'extra_body={\"min_p\": 0.05}'") from None
        for name in ("concurrency", "max_retries", "top_logprobs"):
            if name in values and (not isinstance(values[name], int) or isinstance(values[name], bool)):
                raise RlboundError(f"engine option {name} must be an integer, got {values[name]!r}")
        for name in ("timeout_s", "retry_backoff_s"):
            if name in values and not isinstance(values[name], (int, float)):
                raise RlboundError(f"engine option {name} must be a number, got {values[name]!r}")
        opts = cls(**values)
        opts._check()
        return opts

    def _check(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise RlboundError(f"engine option endpoint must be completions or chat, got {self.endpoint!r}")
        if self.server not in SERVER_KINDS:
            raise RlboundError(f"engine option server must be one of {', '.join(SERVER_KINDS)}, "
                               f"got {self.server!r}")
        if self.concurrency < 1 or self.max_retries < 0 or self.top_logprobs < 0:
            raise RlboundError("engine options concurrency >= 1, max_retries >= 0 and top_logprobs >= 0, got "
                               f"{self.concurrency}, {self.max_retries}, {self.top_logprobs}")
        if not (self.timeout_s > 0 and self.retry_backoff_s >= 0):
            raise RlboundError(f"engine options timeout_s > 0 and retry_backoff_s >= 0, got "
                               f"{self.timeout_s}, {self.retry_backoff_s}")
        if not isinstance(self.logprobs, bool):
            raise RlboundError(f"engine option logprobs must be true or false, got {self.logprobs!r}")
        if not isinstance(self.extra_body, dict):
            raise RlboundError(f"engine option extra_body must be a JSON object, got {self.extra_body!r}")
        taken = sorted(RESERVED_FIELDS & set(self.extra_body))
        if taken:
            raise RlboundError(f"extra_body may not set {taken[0]!r}: rlbound sets it from its own flags "
                               "(--temperature, --top-p, --top-k, --max-tokens, --stop, -E top_logprobs)")


@register_engine("openai")
def openai_engine(model: str, **options: Any) -> "OpenAIEngine":
    """Connect to the server serving ``model`` (see the module docstring for the options)."""
    return OpenAIEngine(str(model), OpenAIOptions.from_engine_options(options))


class _ServerGone(Exception):
    """A request still failing after every retry (timeout, connection, 429, 5xx)."""


class ServerRefused(RlboundError):
    """The server answered a request with a 4xx that retrying will not change."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class OpenAIEngine(Engine):
    """Requests to one OpenAI-compatible server; see the module docstring."""

    name = "openai"

    def __init__(self, model: str, options: OpenAIOptions):
        self.model_name = model
        self.options = options
        url = options.base_url or os.environ.get("OPENAI_BASE_URL")
        if not url:
            raise RlboundError("engine 'openai' needs the server's URL: -E base_url=http://HOST:PORT/v1 "
                               "(or set OPENAI_BASE_URL)")
        self.base_url = _with_v1(str(url))
        self.server_root = self.base_url.removesuffix("/").removesuffix("/v1")
        self._api_key = os.environ.get(options.api_key_env) or "none"  # never recorded
        self.served: dict[str, Any] = {}
        self.server_kind = options.server
        _run(self._connect)

    # ----------------------------------------------------------------------------- connection
    def _client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key,
                                  timeout=self.options.timeout_s, max_retries=0)

    async def _connect(self) -> None:
        """List the served models: the model must be there (else the server's own message)."""
        async with self._client() as client:
            try:
                listed = await self._call(client.models.list, first=True)
            except ServerRefused as err:
                if err.status != 404:
                    raise
                listed = None  # a server without /v1/models: the first request will tell
            if listed is not None:
                entries = {m.id: m for m in listed.data}
                entry = entries.get(self.model_name)
                if entry is None and entries:
                    await self._probe(client)  # raises with the server's words if the model is unknown
                if entry is not None:
                    extra = entry.model_extra or {}
                    self.served = {"owned_by": entry.owned_by, **{k: extra[k] for k in ("root", "max_model_len")
                                                                   if extra.get(k) is not None}}
        if self.server_kind == "auto":
            self.server_kind = "vllm" if self.served.get("owned_by") == "vllm" else "openai"

    async def _probe(self, client: openai.AsyncOpenAI) -> None:
        if self.options.endpoint == "chat":
            await self._call(lambda: client.chat.completions.create(
                model=self.model_name, messages=[{"role": "user", "content": "hi"}], max_tokens=1), first=True)
        else:
            await self._call(lambda: client.completions.create(
                model=self.model_name, prompt="hi", max_tokens=1), first=True)

    async def _call(self, send: Callable[[], Awaitable[Any]], *, first: bool = False) -> Any:
        """``send()`` with retries; a 4xx raises ServerRefused, exhausted retries _ServerGone."""
        for attempt in range(self.options.max_retries + 1):
            try:
                return await send()
            except openai.APIStatusError as exc:
                reason = f"server said ({exc.status_code}): {_server_message(exc)}"
                if exc.status_code == 401:
                    reason += f" (the API key is read from ${self.options.api_key_env}; -E api_key_env=NAME)"
                if not (exc.status_code in RETRY_STATUSES or exc.status_code >= 500):
                    raise ServerRefused(reason, exc.status_code) from None
                delay = _retry_after(exc)
            except openai.APITimeoutError:
                reason, delay = f"no answer within timeout_s={self.options.timeout_s:g}", None
            except openai.APIConnectionError as exc:
                reason, delay = _connection_reason(exc), None
            if attempt == self.options.max_retries:
                retries = f"after {self.options.max_retries} retries"
                if first:
                    raise RlboundError(f"no server answering at {_safe_url(self.base_url)} ({reason}) {retries}; "
                                       "start it or check -E base_url")
                raise _ServerGone(f"server {_safe_url(self.base_url)} stopped answering ({reason}) {retries}; "
                                  "rerun the same command to resume")
            backoff = min(MAX_BACKOFF_S, self.options.retry_backoff_s * 2 ** attempt)
            await asyncio.sleep(delay if delay is not None else backoff * (0.75 + 0.5 * random.random()))
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------------------- prompts
    def chat_prompt(self, user_message: str) -> str:
        if self.options.endpoint != "chat":
            raise RlboundError("engine 'openai' with endpoint=completions sends raw text and cannot apply a "
                               "chat template; use -E endpoint=chat (the server applies the model's) or a "
                               "text --template")
        return CHAT_MARKER + user_message

    def _check_params(self, params: SamplingParams) -> None:
        if params.top_k and self.server_kind != "vllm":
            raise RlboundError(f"top_k is not part of the OpenAI API and server {_safe_url(self.base_url)} is not "
                               "known to take vLLM's top_k; use --top-k 0, or -E server=vllm if it does")

    def _request_body(self, prompt: str, params: SamplingParams, seed: int) -> dict[str, Any]:
        """Keyword arguments of one completions / chat.completions call."""
        chat = self.options.endpoint == "chat"
        if chat != prompt.startswith(CHAT_MARKER):
            raise RlboundError("endpoint=chat sends each prompt as a user message for the server's chat "
                               "template: use a chat template (--template chat or code-instruct), or "
                               "-E endpoint=completions for text templates")
        kwargs: dict[str, Any] = {"model": self.model_name, "seed": seed, "temperature": params.temperature,
                                  "top_p": params.top_p, "max_tokens": params.max_tokens}
        if params.stop:
            kwargs["stop"] = list(params.stop)
        extra: dict[str, Any] = {}
        if self.server_kind == "vllm":
            extra["return_token_ids"] = True
            if params.top_k:
                extra["top_k"] = params.top_k
        k = self.options.top_logprobs
        if chat:
            kwargs["messages"] = [{"role": "user", "content": prompt[len(CHAT_MARKER):]}]
            if self.options.logprobs or k:
                kwargs["logprobs"] = True
                if k:
                    kwargs["top_logprobs"] = k
        else:
            kwargs["prompt"] = prompt
            if self.options.logprobs or k:
                kwargs["logprobs"] = k
        if k and self.server_kind == "vllm":
            extra["return_tokens_as_token_ids"] = True  # distinct keys among the top log-probs
        extra.update(self.options.extra_body)
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    async def _sample_one(self, client: openai.AsyncOpenAI, request: SampleRequest,
                          params: SamplingParams) -> Sample:
        refuse_images(self, (request,))  # text prompts only (images over the API: not yet)
        kwargs = self._request_body(request.prompt, params, request.seed)
        if self.options.endpoint == "chat":
            response = await self._call(lambda: client.chat.completions.create(**kwargs))
            return self._chat_sample(response)
        response = await self._call(lambda: client.completions.create(**kwargs))
        return self._completion_sample(response)

    # ----------------------------------------------------------------------------- responses
    def _completion_sample(self, response: Any) -> Sample:
        choice = response.choices[0]
        lp = choice.logprobs
        wanted = self.options.logprobs and lp is not None and lp.token_logprobs
        logprobs = _floats(lp.token_logprobs) if wanted else []
        entropies = None
        if self.options.top_logprobs and lp is not None and lp.top_logprobs:
            entropies = [top_k_entropy((top or {}).values()) for top in lp.top_logprobs]
        count = len(lp.tokens) if lp is not None and lp.tokens else _completion_tokens(response)
        return Sample(text=choice.text or "", token_ids=self._token_ids(choice, count),
                      finish_reason=_finish(choice.finish_reason), token_logprobs=logprobs,
                      token_entropies=entropies)

    def _chat_sample(self, response: Any) -> Sample:
        choice = response.choices[0]
        content = choice.logprobs.content if choice.logprobs is not None else None
        logprobs = _floats([t.logprob for t in content]) if content and self.options.logprobs else []
        entropies = None
        if self.options.top_logprobs and content:
            entropies = []
            for token in content:
                outcomes = {alt.token: alt.logprob for alt in token.top_logprobs or []}
                outcomes.setdefault(token.token, token.logprob)
                entropies.append(top_k_entropy(outcomes.values()))
        count = len(content) if content else _completion_tokens(response)
        return Sample(text=choice.message.content or "", token_ids=self._token_ids(choice, count),
                      finish_reason=_finish(choice.finish_reason), token_logprobs=logprobs,
                      token_entropies=entropies)

    @staticmethod
    def _token_ids(choice: Any, count: int) -> list[int]:
        ids = (choice.model_extra or {}).get("token_ids")
        return [int(t) for t in ids] if ids is not None else [-1] * count

    # ----------------------------------------------------------------------------- sampling
    def generate(self, prompts: Sequence[str], params: SamplingParams,
                 seeds: Sequence[Sequence[int]]) -> list[list[Sample]]:
        return generate_through_stream(self, prompts, params, seeds)

    def stream(self, requests: Iterable[SampleRequest],
               params: SamplingParams) -> Iterator[tuple[SampleRequest, Sample]]:
        """Yield completions as they arrive, at most ``concurrency`` requests in flight."""
        self._check_params(params)
        feed = _Feed(self, iter(requests), params)
        feed.start()
        try:
            while True:
                try:
                    item = feed.done.get(timeout=0.5)
                except queue.Empty:
                    continue
                if item is _Feed.END:
                    break
                yield item
            feed.join()
            if feed.error is not None:
                error = feed.error
                raise RlboundError(str(error)) if isinstance(error, _ServerGone) else error
        finally:
            feed.abandon()

    # ----------------------------------------------------------------------------- score
    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[TokenScores]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        if self.server_kind != "vllm":
            raise RlboundError(f"server {_safe_url(self.base_url)} is not vLLM-style: score() needs its /tokenize "
                               "endpoint and echoed prompt log-probs (-E server=vllm if it has them)")
        try:
            return _run(lambda: self._score_all(list(prompts), list(completions)))
        except _ServerGone as gone:
            raise RlboundError(str(gone)) from None

    async def _score_all(self, prompts: list[str], completions: list[str]) -> list[TokenScores]:
        slots = asyncio.Semaphore(self.options.concurrency)
        async with self._client() as client:
            bos = await self._bos_id(client)
            prompt_ids: dict[str, asyncio.Task] = {}

            async def one(prompt: str, completion: str) -> TokenScores:
                async with slots:
                    if prompt not in prompt_ids:
                        prompt_ids[prompt] = asyncio.ensure_future(self._prompt_ids(client, prompt, bos))
                    p = await prompt_ids[prompt]
                    c = await self._tokenize(client, {"prompt": completion, "add_special_tokens": False})
                    return await self._score_ids(client, p, c)

            return list(await asyncio.gather(*(one(p, c) for p, c in zip(prompts, completions))))

    async def _tokenize(self, client: openai.AsyncOpenAI, body: dict[str, Any]) -> list[int]:
        try:
            out = await self._call(lambda: client.post(self.server_root + "/tokenize", cast_to=object,
                                                       body={"model": self.model_name, **body}))
        except ServerRefused as err:
            if err.status == 404:
                raise RlboundError(f"server {_safe_url(self.base_url)} has no /tokenize endpoint, which score() "
                                   "needs to tokenise prompt and completion separately") from None
            raise
        return [int(t) for t in out["tokens"]]

    async def _bos_id(self, client: openai.AsyncOpenAI) -> int | None:
        """The BOS id the tokenizer adds to plain text, or None if it adds none."""
        bare = await self._tokenize(client, {"prompt": "a", "add_special_tokens": False})
        full = await self._tokenize(client, {"prompt": "a", "add_special_tokens": True})
        return full[0] if len(full) > len(bare) and full[1:1 + len(bare)] == bare else None

    async def _prompt_ids(self, client: openai.AsyncOpenAI, prompt: str, bos: int | None) -> list[int]:
        if prompt.startswith(CHAT_MARKER):
            message = {"role": "user", "content": prompt[len(CHAT_MARKER):]}
            return await self._tokenize(client, {"messages": [message], "add_generation_prompt": True})
        ids = await self._tokenize(client, {"prompt": prompt, "add_special_tokens": False})
        if bos is not None and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        if not ids:
            raise RlboundError(f"empty prompt and the tokenizer of {self.model_name!r} adds no BOS token to "
                               "start from")
        return ids

    async def _score_ids(self, client: openai.AsyncOpenAI, prompt: list[int],
                         completion: list[int]) -> TokenScores:
        if not completion:
            return TokenScores(token_ids=[], token_logprobs=[], token_entropies=None)
        response = await self._call(lambda: client.completions.create(
            model=self.model_name, prompt=prompt + completion, echo=True, logprobs=0, max_tokens=1,
            temperature=1.0, top_p=1.0))
        lp = response.choices[0].logprobs
        got = lp.token_logprobs if lp is not None and lp.token_logprobs else []
        if len(got) < len(prompt) + len(completion):
            raise RlboundError(f"server {_safe_url(self.base_url)} did not echo the prompt's log-probs "
                               "(echo=true, logprobs=0), which score() needs")
        return TokenScores(token_ids=completion, token_entropies=None,
                           token_logprobs=_floats(got[len(prompt):len(prompt) + len(completion)]))

    # ----------------------------------------------------------------------------- info
    def info(self) -> EngineInfo:
        opts = asdict(self.options)
        k = self.options.top_logprobs
        details: dict[str, Any] = {
            "base_url": _safe_url(self.base_url),
            "endpoint": self.options.endpoint,
            "server": self.server_kind,
            "served_model": self.served,
            "api_key_env": self.options.api_key_env,
            **{name: opts[name] for name in ("concurrency", "timeout_s", "max_retries", "retry_backoff_s",
                                             "extra_body")},
            "token_logprobs": ("as reported by the server (vLLM default raw_logprobs: untempered)"
                               if self.options.logprobs else "absent"),
            # The report reads {"method": "top-k", "k": K} and says "top-K entropy: a lower bound".
            "token_entropy": ({"method": "top-k", "k": k, "rest": "remaining mass as one bucket",
                               "bound": "lower"} if k else {"method": "absent"}),
            "top_logprobs": k,
            "token_ids": ("from the server (return_token_ids)" if self.server_kind == "vllm"
                          else "absent: -1 placeholders, one per generated token"),
            "chat": "server's chat template (one user message)" if self.options.endpoint == "chat" else "none",
            "openai_client": openai.__version__,
        }
        return EngineInfo(engine="openai", model=self.model_name, details=details)


class _Feed:
    """The background asyncio loop behind :meth:`OpenAIEngine.stream`.

    It keeps up to ``concurrency`` requests in flight, pulling the next request from the iterator
    as soon as one finishes, and puts finished ``(request, sample)`` pairs on ``done``. While
    ``concurrency`` finished pairs wait there untaken it sends nothing new (backpressure, so at most
    twice ``concurrency`` samples are held). After the first failure it sends nothing new, waits
    for the requests in flight, records the failure in ``error`` and puts ``END``. The consumer
    never has to wake the loop: a slot is freed in the loop when its request finishes.
    """

    END = object()
    BACKLOG_POLL_S = 0.005

    def __init__(self, engine: OpenAIEngine, requests: Iterator[SampleRequest], params: SamplingParams):
        self.engine, self.requests, self.params = engine, requests, params
        self.concurrency = engine.options.concurrency
        self.done: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rlbound-openai", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def join(self) -> None:
        self._thread.join()

    def abandon(self) -> None:
        """Stop everything (the consumer left early or an error is on its way up)."""
        if self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._cancel_all)  # type: ignore[union-attr]
            except RuntimeError:  # the loop has just finished
                pass
            self._thread.join()

    def _cancel_all(self) -> None:
        for task in asyncio.all_tasks():
            task.cancel()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready.set()
        try:
            self._loop.run_until_complete(self._feed())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - e.g. the client could not be built
            self._fail(exc)
        finally:
            self._loop.close()
            self.done.put(self.END)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error

    async def _feed(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task] = set()
        async with self.engine._client() as client:
            try:
                while self.error is None:
                    await slots.acquire()
                    while self.done.qsize() >= self.concurrency and self.error is None:
                        await asyncio.sleep(self.BACKLOG_POLL_S)  # the consumer is behind
                    if self.error is not None:
                        break
                    try:
                        request = next(self.requests)
                    except StopIteration:
                        break
                    except BaseException as exc:  # noqa: BLE001 - the caller's iterator failed
                        self._fail(exc)
                        break
                    task = asyncio.ensure_future(self._one(client, request, slots))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            finally:
                if tasks:
                    await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, client: openai.AsyncOpenAI, request: SampleRequest, slots: asyncio.Semaphore) -> None:
        try:
            self.done.put((request, await self.engine._sample_one(client, request, self.params)))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer after what finished
            self._fail(exc)
        finally:
            slots.release()


# --------------------------------------------------------------------------------- helpers
def _run(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine on a fresh event loop in its own thread (safe inside a running loop)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(make())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="rlbound-openai", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _floats(values: Iterable[Any]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def _finish(reason: str | None) -> str:
    return "stop" if reason in (None, "eos", "stop_sequence") else str(reason)


def _completion_tokens(response: Any) -> int:
    usage = getattr(response, "usage", None)
    return int(getattr(usage, "completion_tokens", 0) or 0)


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("error")
        if isinstance(message, dict):
            message = message.get("message")
        if message:
            return " ".join(str(message).split())
    if isinstance(body, str) and body.strip():
        return " ".join(body.split())
    return str(exc.message).split(" - ", 1)[-1]


def _retry_after(exc: openai.APIStatusError) -> float | None:
    try:
        value = float(exc.response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(value, MAX_BACKOFF_S) if value >= 0 else None


def _connection_reason(exc: BaseException) -> str:
    """The innermost operating-system reason of a connection error ("connection refused")."""
    seen: BaseException | None = exc
    last = str(exc)
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno).lower()
        if str(seen):
            last = str(seen)
        seen = seen.__cause__ or seen.__context__
    return last.rstrip(".").lower() or "connection error"


def _with_v1(url: str) -> str:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise RlboundError(f"base_url {url!r} is not a URL like http://HOST:PORT/v1")
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _safe_url(url: str) -> str:
    """The URL without user, password or query (where keys sometimes travel)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
