"""The model being trained, behind one small interface for the tiny and Hugging Face engines.

A :class:`Policy` gives the training loop what it needs and nothing more:

* ``engine()``: an engine over the *same* weights, for rollouts (no copy; generation runs under
  ``inference_mode`` and puts the model back in training mode);
* ``encode_prompt(text)``: the token ids the engine feeds for a rendered prompt (with BOS);
* ``encode_completion(text)``: a completion's token ids followed by EOS (what supervised
  fine-tuning learns, :mod:`rlbound.train.sft`);
* ``logits(ids, attention_mask)``: a differentiable forward pass over right-padded rows;
* ``hidden(ids, attention_mask)``: the last hidden states (for a PPO value head);
* ``bos_id`` / ``pad_id``; ``frozen_copy()`` (the KL reference); ``save(dir)``.

What it does not do: sampling logic (the engines), losses (:mod:`rlbound.train.algorithms`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from rlbound.errors import RlboundError

__all__ = ["Policy", "load_policy"]


class Policy:
    """A trainable causal LM and its tokenizer (see the module docstring)."""

    kind = ""
    bos_id: int | None
    pad_id: int

    def engine(self):  # pragma: no cover - interface
        raise NotImplementedError

    def encode_prompt(self, text: str) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def encode_completion(self, text: str) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def hidden(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def hidden_size(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def save(self, out_dir: str | Path, meta: dict) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def parameters(self):
        return self.model.parameters()

    def frozen_copy(self) -> "Policy":
        other = copy.copy(self)
        other.model = copy.deepcopy(self.model).eval()
        for p in other.model.parameters():
            p.requires_grad_(False)
        return other


class TinyPolicy(Policy):
    kind = "tiny"

    def __init__(self, model, tokenizer, source: str, compute_dtype: torch.dtype = torch.float32):
        self.model, self.tokenizer, self.source = model, tokenizer, source
        self.bos_id, self.pad_id = tokenizer.bos_id, tokenizer.pad_id
        self.compute_dtype = compute_dtype
        """bfloat16: forward passes under autocast (float32 weights and logits) and rollouts from a
        bfloat16 copy of the weights, as the tiny engine samples in bfloat16."""

    def engine(self):
        from rlbound.engines.tiny.engine import TinyEngine

        model = self.model
        if self.compute_dtype != torch.float32:  # a fresh copy per rollout batch: it follows the updates
            model = copy.deepcopy(self.model).to(self.compute_dtype).eval()
        return TinyEngine.from_model(model, self.tokenizer, label=self.source)

    def _autocast(self, ids):
        from rlbound.engines.precision import autocast

        return autocast(ids.device.type, self.compute_dtype)

    def encode_prompt(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, bos=True)

    def encode_completion(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, eos=True)

    def logits(self, ids, attention_mask):
        with self._autocast(ids):
            return self.model(ids)  # right padding: causal attention never looks at later pads

    def hidden(self, ids, attention_mask):
        with self._autocast(ids):
            return self.model(ids, hidden=True)

    def hidden_size(self) -> int:
        return self.model.config.d_model

    def save(self, out_dir, meta):
        from rlbound.engines.tiny.checkpoint import save_model

        save_model(self.model, self.tokenizer, out_dir, extra=meta)


class HFPolicy(Policy):
    kind = "hf"

    def __init__(self, engine):
        self._engine = engine
        self.model, self.tokenizer, self.source = engine.model, engine.tokenizer, engine.model_name
        self.bos_id, self.pad_id = engine.bos_id, engine.pad_id

    def engine(self):
        return self._engine

    def encode_prompt(self, text: str) -> list[int]:
        return self._engine.encode_prompt(text)

    def encode_completion(self, text: str) -> list[int]:
        eos = self.tokenizer.eos_token_id
        eos = eos if eos is not None else min(self._engine.eos_ids, default=None)
        if eos is None:
            raise RlboundError(f"model '{self.source}' has no end-of-sequence token to learn to stop with")
        return self._engine.encode_completion(text) + [int(eos)]

    def logits(self, ids, attention_mask):
        return self.model(input_ids=ids, attention_mask=attention_mask).logits.float()

    def hidden(self, ids, attention_mask):
        out = self.model(input_ids=ids, attention_mask=attention_mask, output_hidden_states=True)
        return out.hidden_states[-1].float()

    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def frozen_copy(self) -> "Policy":
        other = super().frozen_copy()
        other._engine = copy.copy(self._engine)
        other._engine.model = other.model
        return other

    def save(self, out_dir, meta):
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _forget_dequantized_gguf(self.model)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        (out / "rlbound_training.json").write_text(__import__("json").dumps(meta, indent=1) + "\n")


def _forget_dequantized_gguf(model) -> None:
    """A model loaded from a ``.gguf`` file whose weights were all dequantized to plain float
    tensors (transformers' GGUF loader without GGUF kernels) still carries its GGUF quantizer,
    and ``save_pretrained`` refuses it; its weights are an ordinary float model, saved as one."""
    quantizer = getattr(model, "hf_quantizer", None)
    config = getattr(quantizer, "quantization_config", None)
    if str(getattr(getattr(config, "quant_method", None), "value", "")) != "gguf":
        return
    if getattr(quantizer, "quantized", None) or not all(p.dtype.is_floating_point for p in model.parameters()):
        return  # weights kept in GGUF blocks: not a plain model (save_pretrained says why)
    quantizer.remove_quantization_config(model)


def load_policy(model: str | Path, engine: str = "tiny", device: str = "cpu", dtype: str = "float32") -> Policy:
    """The trainable policy for a tiny model directory or a transformers model; ``dtype``: the
    tiny policy's compute format (``auto``, ``float32``, ``bfloat16``; weights stay float32)."""
    if engine == "tiny":
        from rlbound.engines.precision import resolve_dtype
        from rlbound.engines.tiny.checkpoint import load_model

        compute = resolve_dtype(dtype, device, what="train: dtype")
        tiny, tokenizer = load_model(model, device=device)
        return TinyPolicy(tiny, tokenizer, str(model), compute)
    if dtype not in ("float32", "fp32", "auto"):
        raise RlboundError(f"train: dtype {dtype!r} is for tiny models; a transformers policy trains in float32")
    if engine == "hf":
        from rlbound.engines.hf import hf_engine

        loaded = hf_engine(str(model), device=device, dtype="float32")
        return HFPolicy(loaded)
    raise RlboundError(f"train: engine {engine!r} cannot be trained here; use tiny or hf")
