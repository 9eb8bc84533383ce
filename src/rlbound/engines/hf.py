"""The Hugging Face transformers engine: sample and score any causal LM that transformers loads.

Registered as ``"hf"``. ``model`` is a local model directory, a ``.gguf`` file (or a directory
holding exactly one, with no ``config.json``), or a hub name passed through to ``from_pretrained``;
loading (path resolution, device, dtype, one-line load errors) lives in
:mod:`rlbound.engines.hf_loading`. An image-text model (LLaVA, Idefics3/SmolVLM, Qwen2-VL, ...)
is loaded with its processor as :class:`rlbound.engines.hf_vision.HFVisionEngine`, which takes
problems' images and decodes with the same loop.

What it does:

* ``generate`` runs its own batched decoding loop over the model's ``forward`` with a KV cache.
  Each distinct prompt of a batch is prefilled once (prompts left-padded, attention mask and
  position ids set so padding changes nothing) and its cache rows are copied to its samples;
  finished rows are dropped from the batch. Every token is chosen by
  :func:`rlbound.engines.sampling.sample_next` with the sample's own seed and the decoding step,
  so a sample depends on its (prompt, seed, params) only, not on its batch neighbours (up to
  floating-point differences between batch shapes). ``model.generate`` is not used: its random
  generator is global, not per sample. The model's ``generation_config`` sampling settings
  (temperature, repetition penalty, ...) are ignored; only ``SamplingParams`` apply. Its
  ``eos_token_id`` (an int or a list) is used, with ``config.eos_token_id`` and the tokenizer's.
* A completion ends at an end-of-sequence token (kept in ``token_ids``, with its log-probability:
  ending is part of the sequence's likelihood; dropped from ``text`` with the other special
  tokens), at a stop string (``text`` is cut before it; as in vLLM the tokens that produced the
  stop string stay in ``token_ids``), or after ``max_tokens`` tokens (``finish_reason="length"``).
* ``score`` tokenises prompt and completion *separately* and concatenates the ids, so scoring
  the text of a generated completion sees the same prompt ids as generation did and, wherever
  the completion text re-tokenises to the sampled ids, reproduces generate's log-probabilities.
  (Tokenising the joined string instead could merge tokens across the boundary.) No EOS is
  appended. ``score_ids`` scores given token ids directly, which is exact for any sample.
* Prompt tokenisation never doubles the BOS token: the text is encoded without special tokens
  and the BOS is prepended only if the tokenizer normally adds one and the text (e.g. a chat
  template's output) does not already begin with it. An empty prompt becomes ``[BOS]``.

What it does not do: continuous batching (a finished row's slot is not refilled until the next
batch), prefix caching across batches, tensor/pipeline parallelism or ``device_map`` sharding,
speculative decoding, or checks that prompt + ``max_tokens`` fits the model's context. Progress
bars belong to the caller (one call is one batch of work from its point of view).
"""

from __future__ import annotations

import inspect
from typing import Any, Hashable, Sequence

import numpy as np
import torch

from rlbound.engines.base import (
    Engine,
    EngineInfo,
    Sample,
    SamplingParams,
    TokenScores,
    register_engine,
)
from rlbound.engines.hf_loading import (
    is_image_text_model,
    load_model_and_tokenizer,
    prompt_token_ids,
    render_chat,
    tokenizer_adds_bos,
)
from rlbound.engines.sampling import logprobs_and_entropies, sample_next
from rlbound.errors import RlboundError

_SCORE_MAX_LOGITS = 2**28  # logits held at once by score (1 GiB in float32)


@register_engine("hf")
def hf_engine(
    model: str,
    batch_size: int = 16,
    device: str = "cpu",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    **kw: Any,
) -> "HFEngine":
    """Load ``model`` with transformers (see the module docstring for the accepted forms).

    ``batch_size`` bounds the rows decoded (or scored) together. ``dtype="auto"`` keeps the
    checkpoint's dtype, except that half precision is upcast to float32 on CPU. Further options
    (``gguf_file``, ``revision``, ``attn_implementation``): see
    :func:`rlbound.engines.hf_loading.load_model_and_tokenizer`.
    """
    if batch_size < 1:
        raise RlboundError(f"batch_size must be >= 1, got {batch_size}")
    if is_image_text_model(str(model), trust_remote_code, **kw):  # a vision-language model
        from rlbound.engines.hf_vision import HFVisionEngine

        lm, processor, _ = load_model_and_tokenizer(
            str(model), device=device, dtype=dtype, trust_remote_code=trust_remote_code,
            image_text=True, **kw)
        return HFVisionEngine(lm, processor, model_name=str(model), batch_size=batch_size)
    lm, tokenizer, gguf_file = load_model_and_tokenizer(
        str(model), device=device, dtype=dtype, trust_remote_code=trust_remote_code, **kw
    )
    return HFEngine(lm, tokenizer, model_name=str(model), batch_size=batch_size, gguf_file=gguf_file)


class HFEngine(Engine):
    """A loaded transformers causal LM and its tokenizer; see the module docstring."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, *, model_name: str, batch_size: int = 16,
                 gguf_file: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.batch_size = batch_size
        self.gguf_file = gguf_file
        self.device = next(model.parameters()).device
        self.eos_ids = _eos_ids(model, tokenizer)
        self.bos_id = tokenizer.bos_token_id
        self._adds_bos = tokenizer_adds_bos(tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)
        params = inspect.signature(model.forward).parameters
        self._keep_arg = next((a for a in ("logits_to_keep", "num_logits_to_keep") if a in params), None)
        head = model.get_output_embeddings()
        self.vocab_size = int(head.weight.shape[0] if head is not None else model.config.vocab_size)

    # ----------------------------------------------------------------------------- prompts
    def chat_prompt(self, user_message: str) -> str:
        return render_chat(self.tokenizer, user_message, self.model_name)

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a prompt, with exactly one BOS where the tokenizer uses one."""
        return prompt_token_ids(self.tokenizer, text, self._adds_bos, self.model_name)

    def encode_completion(self, text: str) -> list[int]:
        """Token ids of a completion: the text alone, without special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ----------------------------------------------------------------------------- forward
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, *,
                 cache: Any = None, use_cache: bool = False, keep: int | None = None,
                 **inputs: Any) -> Any:
        """One forward pass; ``keep`` limits the logits to the last ``keep`` positions;
        ``inputs`` are further model inputs (an image-text model's pixel values)."""
        kwargs: dict[str, Any] = dict(inputs)
        if keep is not None and self._keep_arg is not None:
            kwargs[self._keep_arg] = keep
        return self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                          past_key_values=cache, use_cache=use_cache, **kwargs)

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded ids, attention mask and position ids (0 at each row's first real token)."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), pos.to(self.device)

    # ----------------------------------------------------------------------------- generate
    def generate(self, prompts: Sequence[str], params: SamplingParams,
                 seeds: Sequence[Sequence[int]]) -> list[list[Sample]]:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seed lists")
        prompt_ids = [self.encode_prompt(p) for p in prompts]
        # Longest prompts first, each prompt's samples adjacent: little padding, shared prefills.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompt_ids[i]))
        jobs = [(i, j, int(s)) for i in order for j, s in enumerate(seeds[i])]
        out: list[list[Sample | None]] = [[None] * len(s) for s in seeds]
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start:start + self.batch_size]
            rows = self._generate_rows([tuple(prompt_ids[i]) for i, _, _ in chunk],
                                       [s for _, _, s in chunk], params)
            for (i, j, _), sample in zip(chunk, rows):
                out[i][j] = sample
        return out  # type: ignore[return-value]

    def _prefill(self, prompts: list[Hashable]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The forward pass over distinct prompts (here: tuples of token ids), left-padded:
        ``(output with the cache and last logits, attention mask, position ids)``."""
        ids, mask, pos = self._left_pad(prompts)  # type: ignore[arg-type]
        return self._forward(ids, mask, pos, use_cache=True, keep=1), mask, pos

    @torch.inference_mode()
    def _generate_rows(self, prompts: list[Hashable], seeds: list[int],
                       params: SamplingParams) -> list[Sample]:
        """Decode one batch of rows (row ``r``: prompt ``prompts[r]``, seed ``seeds[r]``; a
        prompt is what :meth:`_prefill` takes, rows of equal prompts share one prefill)."""
        distinct: dict[Hashable, int] = {}
        source = [distinct.setdefault(p, len(distinct)) for p in prompts]
        out, mask, pos = self._prefill(list(distinct))
        cache = _as_cache(out.past_key_values)
        src = torch.tensor(source, device=self.device)
        cache.reorder_cache(src)  # one cache row per sample, copied from its prompt's prefill
        logits, mask, next_pos = out.logits[src, -1, :], mask[src], pos[src, -1] + 1

        seeds_np = np.array(seeds, dtype=np.uint64)
        tokens: list[list[int]] = [[] for _ in seeds]
        logprobs: list[list[float]] = [[] for _ in seeds]
        entropies: list[list[float]] = [[] for _ in seeds]
        finish: list[str] = [""] * len(seeds)
        active = list(range(len(seeds)))  # batch position -> row
        for step in range(params.max_tokens):
            chosen = sample_next(logits, params, seeds_np[active], step)
            new_tokens = chosen.tokens.tolist()
            for row, tok, lp, ent in zip(active, new_tokens, chosen.logprobs.tolist(),
                                         chosen.entropies.tolist()):
                tokens[row].append(tok)
                logprobs[row].append(lp)
                entropies[row].append(ent)
            keep = []
            for b, row in enumerate(active):
                reason = self._finish_reason(tokens[row], params)
                if reason is None:
                    keep.append(b)
                else:
                    finish[row] = reason
            if not keep:
                break
            next_ids = torch.tensor(new_tokens, device=self.device)
            if len(keep) < len(active):
                sel = torch.tensor(keep, device=self.device)
                cache.reorder_cache(sel)
                mask, next_pos, next_ids = mask[sel], next_pos[sel], next_ids[sel]
                active = [active[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            out = self._forward(next_ids[:, None], mask, next_pos[:, None], cache=cache,
                                use_cache=True)
            cache, logits, next_pos = _as_cache(out.past_key_values), out.logits[:, -1, :], next_pos + 1
        return [self._sample(tokens[r], logprobs[r], entropies[r], finish[r], params)
                for r in range(len(seeds))]

    def _finish_reason(self, toks: list[int], params: SamplingParams) -> str | None:
        """Why the completion ``toks`` ends now ("stop" / "length"), or None to go on."""
        if toks[-1] in self.eos_ids or self._stop_at(toks, params) is not None:
            return "stop"
        return "length" if len(toks) >= params.max_tokens else None

    def _stop_at(self, toks: list[int], params: SamplingParams) -> int | None:
        """Character offset of the first stop string in the decoded tokens, or None."""
        if not params.stop:
            return None
        text = self.tokenizer.decode(toks, skip_special_tokens=True)
        hits = [k for k in (text.find(s) for s in params.stop if s) if k >= 0]
        return min(hits) if hits else None

    def _sample(self, toks: list[int], lps: list[float], ents: list[float], finish: str,
                params: SamplingParams) -> Sample:
        text = self.tokenizer.decode(toks, skip_special_tokens=True)
        cut = self._stop_at(toks, params)
        if cut is not None:
            text = text[:cut]
        return Sample(text=text, token_ids=toks, finish_reason=finish, token_logprobs=lps,
                      token_entropies=ents)

    # ----------------------------------------------------------------------------- score
    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[TokenScores]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return self.score_ids([self.encode_prompt(p) for p in prompts],
                              [self.encode_completion(c) for c in completions])

    def score_ids(self, prompt_ids: Sequence[Sequence[int]],
                  completion_ids: Sequence[Sequence[int]]) -> list[TokenScores]:
        """Per-token log-probabilities and entropies of given completion ids after given prompt ids."""
        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
        results: list[TokenScores | None] = [None] * len(prompt_ids)
        todo = []
        for k, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
            if not p:
                raise ValueError("score needs at least one prompt token (encode_prompt gives a BOS)")
            if c:
                todo.append(k)
            else:
                results[k] = TokenScores(token_ids=[], token_logprobs=[], token_entropies=[])
        # Longest first; a batch holds at most batch_size rows and _SCORE_MAX_LOGITS logits.
        todo.sort(key=lambda k: -(len(prompt_ids[k]) + len(completion_ids[k])))
        batches: list[list[int]] = []
        for k in todo:
            grown = (batches[-1] + [k]) if batches else [k]
            if batches and len(grown) <= self.batch_size and self._logits_held(
                    [prompt_ids[j] for j in grown], [completion_ids[j] for j in grown]) <= _SCORE_MAX_LOGITS:
                batches[-1] = grown
            else:
                batches.append([k])
        for batch in batches:
            scored = self._score_batch([prompt_ids[k] for k in batch], [completion_ids[k] for k in batch])
            for k, scores in zip(batch, scored):
                results[k] = scores
        return results  # type: ignore[return-value]

    def _logits_held(self, prompts: list[Sequence[int]], completions: list[Sequence[int]]) -> int:
        """How many logits one scoring forward over these rows materialises."""
        if self._keep_arg is not None:
            positions = max(len(c) for c in completions) + 1
        else:
            positions = max(len(p) + len(c) for p, c in zip(prompts, completions))
        return len(prompts) * positions * self.vocab_size

    @torch.inference_mode()
    def _score_batch(self, prompts: list[Sequence[int]],
                     completions: list[Sequence[int]]) -> list[TokenScores]:
        ids, mask, pos = self._left_pad([list(p) + list(c) for p, c in zip(prompts, completions)])
        keep = max(len(c) for c in completions) + 1
        logits = self._forward(ids, mask, pos, keep=keep).logits[:, -keep:, :]  # last `keep` positions
        out = []
        for row, comp in enumerate(completions):
            # With left padding every sequence ends at the last position, so the logits that predict
            # this completion's tokens are the `len(comp)` positions just before the last one.
            row_logits = logits[row, keep - len(comp) - 1: keep - 1]
            target = torch.tensor(list(comp), device=row_logits.device)
            chosen, ent = logprobs_and_entropies(row_logits, target)
            out.append(TokenScores(token_ids=list(comp), token_logprobs=chosen.tolist(),
                                   token_entropies=ent.tolist()))
        return out

    # ----------------------------------------------------------------------------- info
    def info(self) -> EngineInfo:
        import transformers

        details: dict[str, Any] = {
            "model_class": type(self.model).__name__,
            "parameters": int(sum(p.numel() for p in self.model.parameters())),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "device": str(self.device),
            "gguf_file": self.gguf_file,
            "transformers": transformers.__version__,
            "tokenizer_class": type(self.tokenizer).__name__,
            "eos_token_ids": sorted(self.eos_ids),
            "batch_size": self.batch_size,
        }
        commit = getattr(self.model.config, "_commit_hash", None)
        if commit:
            details["commit"] = commit
        return EngineInfo(engine="hf", model=self.model_name, details=details)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-sequence ids from the generation config, the model config and the tokenizer."""
    found: set[int] = set()
    sources = [getattr(getattr(model, "generation_config", None), "eos_token_id", None),
               getattr(model.config, "eos_token_id", None), tokenizer.eos_token_id]
    for value in sources:
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, (list, tuple)):
            found.update(int(v) for v in value)
    return found


def _as_cache(past: Any) -> Any:
    """The returned ``past_key_values`` as a Cache object (older transformers return tuples)."""
    if isinstance(past, (tuple, list)):
        from transformers import DynamicCache

        return DynamicCache.from_legacy_cache(tuple(past))
    return past
