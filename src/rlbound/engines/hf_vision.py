"""Image-text models on the hf engine: problems with images, decoded with the hf engine's loop.

:func:`rlbound.engines.hf.hf_engine` builds an :class:`HFVisionEngine` when the model is an
image-text model (``AutoModelForImageTextToText``: LLaVA, Idefics3/SmolVLM, Qwen2-VL, ...); it
loads the model's ``AutoProcessor`` beside it. Everything after the prompt's prefill is the hf
engine's own: the same per-sample seeds and token choice, the same ``Sample`` (token ids,
untempered log-probs, full-vocabulary entropies), the same stop and end-of-sequence rules.

What it adds:

* Requests carry images (:attr:`rlbound.engines.base.SampleRequest.images`). Their ``<image>``
  marks become the model's placeholder (:func:`rlbound.images.image_placeholder`, read off its
  chat template), the processor expands them and computes the pixel inputs, and the prefill runs
  the model on both. Requests of the same (prompt, images) share one prefill, as text prompts do.
  Prompt ids follow the text engines' rule: the processor tokenises without special tokens and
  the BOS is prepended where the tokenizer uses one (so the vllm engine sees the same ids).
* Per-token processor outputs (``token_type_ids``, ``mm_token_type_ids``) are re-aligned with
  that BOS and the left padding. Models with multimodal rotary positions (Qwen2-VL and kin: a
  ``get_rope_index``) get their 3-D positions for the prefill; decoding continues from the
  largest position, which is where those models put the next text token.
* The ``chat`` template renders with the processor's chat template (text parts).

What it does not do: video, images in ``score`` (scoring takes text prompts: scores of a visual
problem's completion would be without its image), image preprocessing of its own (the
processor's settings apply), or a check that a model was trained with images at that place.
"""

from __future__ import annotations

import inspect
from typing import Any, Hashable, Sequence

import torch

from rlbound.engines.base import Sample, SampleRequest, SamplingParams
from rlbound.engines.hf import HFEngine
from rlbound.engines.hf_loading import one_line
from rlbound.errors import RlboundError
from rlbound.images import expand_image_marks, image_placeholder, open_image

_PER_TOKEN_INPUTS = ("token_type_ids", "mm_token_type_ids")


class HFVisionEngine(HFEngine):
    """An image-text model, its processor and the hf engine's decoding loop (module docstring)."""

    accepts_images = True

    def __init__(self, model: Any, processor: Any, *, model_name: str, batch_size: int = 16):
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise RlboundError(f"the processor of model {model_name!r} has no tokenizer")
        super().__init__(model, tokenizer, model_name=model_name, batch_size=batch_size)
        self.processor = processor
        self._placeholder: str | None = None
        base = getattr(model, "model", None)
        self._rope_index = getattr(base, "get_rope_index", None)

    @property
    def image_placeholder(self) -> str:
        if self._placeholder is None:
            self._placeholder = image_placeholder(self.processor)
        return self._placeholder

    def chat_prompt(self, user_message: str) -> str:
        if not getattr(self.processor, "chat_template", None):
            return super().chat_prompt(user_message)
        return self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": user_message}]}],
            tokenize=False, add_generation_prompt=True)

    # ----------------------------------------------------------------------------- generate
    def generate(self, prompts: Sequence[str], params: SamplingParams,
                 seeds: Sequence[Sequence[int]]) -> list[list[Sample]]:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seed lists")
        requests = [SampleRequest((i, j), prompt, int(seed))
                    for i, prompt in enumerate(prompts) for j, seed in enumerate(seeds[i])]
        out: list[list[Sample | None]] = [[None] * len(s) for s in seeds]
        for request, sample in zip(requests, self.generate_requests(requests, params)):
            i, j = request.key
            out[i][j] = sample
        return out  # type: ignore[return-value]

    def generate_requests(self, requests: Sequence[SampleRequest],
                          params: SamplingParams) -> list[Sample]:
        """One sample per request: requests of one (prompt, images) adjacent and prefilled once
        per batch; a batch holds prompts with images or prompts without, not both."""
        groups: dict[tuple[str, tuple], list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault((request.prompt, tuple(request.images)), []).append(i)
        keys = sorted(groups, key=lambda k: (bool(k[1]), -len(k[0])))  # stable: long prompts first
        jobs = [(key, i) for key in keys for i in groups[key]]
        samples: list[Sample | None] = [None] * len(requests)
        start = 0
        while start < len(jobs):
            with_images = bool(jobs[start][0][1])
            end = start
            while (end < len(jobs) and end - start < self.batch_size
                   and bool(jobs[end][0][1]) == with_images):
                end += 1
            chunk = jobs[start:end]
            rows = self._generate_rows([key for key, _ in chunk],
                                       [int(requests[i].seed) for _, i in chunk], params)
            for (_, i), sample in zip(chunk, rows):
                samples[i] = sample
            start = end
        return samples  # type: ignore[return-value]

    # ----------------------------------------------------------------------------- prefill
    def _prefill(self, prompts: list[Hashable]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Process (prompt, images) pairs and run the model over them, left-padded."""
        texts, images = [], []
        for prompt, sources in prompts:  # type: ignore[misc]
            texts.append(expand_image_marks(prompt, len(sources), self.image_placeholder)
                         if sources else prompt)
            images.append([open_image(s) for s in sources])
        kwargs: dict[str, Any] = {"text": texts, "add_special_tokens": False, "padding": True,
                                  "return_tensors": "pt"}
        if any(images):
            kwargs["images"] = images
        try:
            enc = dict(self.processor(**kwargs))
        except Exception as err:  # noqa: BLE001 - the processor's complaint, in one line
            raise RlboundError(f"the processor of model {self.model_name!r} could not prepare "
                               f"a prompt: {one_line(err)}") from err
        raw_ids, raw_mask = enc.pop("input_ids"), enc.pop("attention_mask").bool()
        rows = [raw_ids[r][raw_mask[r]].tolist() for r in range(len(texts))]
        bos = [self._adds_bos and self.bos_id is not None and (not row or row[0] != self.bos_id)
               for row in rows]
        rows = [[self.bos_id] + row if b else row for row, b in zip(rows, bos)]
        if not all(rows):
            raise RlboundError(f"empty prompt and the tokenizer of {self.model_name!r} has no BOS "
                               "token to start from")
        ids, mask, pos = self._left_pad(rows)
        inputs: dict[str, Any] = {}
        for name, value in enc.items():
            if torch.is_tensor(value) and (name in _PER_TOKEN_INPUTS or (
                    value.dim() >= 2 and tuple(value.shape[:2]) == tuple(raw_ids.shape)
                    and not name.startswith(("pixel", "image")))):
                value = _realign(value, raw_mask, bos, ids.shape[1])
            inputs[name] = value.to(self.device) if torch.is_tensor(value) else value
        forward_pos = pos
        if self._rope_index is not None and any(images):
            accepted = inspect.signature(self._rope_index).parameters
            forward_pos, _ = self._rope_index(
                ids, attention_mask=mask, **{k: v for k, v in inputs.items() if k in accepted})
            pos = forward_pos.max(dim=0).values  # the next text token follows the largest position
        out = self._forward(ids, mask, forward_pos, use_cache=True, keep=1, **inputs)
        return out, mask, pos

    # ----------------------------------------------------------------------------- info
    def info(self) -> Any:
        info = super().info()
        info.details.update(processor_class=type(self.processor).__name__, image_text=True,
                            image_processor_class=type(getattr(self.processor, "image_processor",
                                                               None)).__name__)
        return info


def _realign(value: torch.Tensor, mask: torch.Tensor, bos: list[bool], width: int) -> torch.Tensor:
    """A per-token tensor of the processor's padding moved to the engine's rows: its real
    positions, a 0 for a prepended BOS, left-padded with 0 to ``width``."""
    out = value.new_zeros((value.shape[0], width, *value.shape[2:]))
    for r in range(value.shape[0]):
        real = value[r][mask[r]]
        if bos[r]:
            real = torch.cat([real.new_zeros((1, *real.shape[1:])), real])
        out[r, width - real.shape[0]:] = real
    return out
