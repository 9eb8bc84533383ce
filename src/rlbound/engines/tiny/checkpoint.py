"""Saving and loading tiny model directories.

A tiny model directory holds::

    config.json          {"format": "rlbound-tiny", "format_version": 1,
                          "model": {TinyConfig fields}, "meta": {how it was made}}
    tokenizer.json       the character tokenizer (see tokenizer.py)
    model.safetensors    the weights, named as TinyLlama's state_dict (fused qkv / gate_up)
    training_state.pt    optional: optimizer, scheduler step and RNG state, for resuming training

What it does not do: no sharding, no dtype conversion (weights are float32), no Hugging Face
layout — :mod:`rlbound.engines.tiny.export` writes that.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rlbound.engines.tiny.model import TinyConfig, TinyLlama
from rlbound.engines.tiny.tokenizer import CharTokenizer
from rlbound.errors import RlboundError

FORMAT = "rlbound-tiny"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINING_STATE_FILE = "training_state.pt"
_NESTED_MODELS = ("model", "checkpoint/policy", "policy")  # where `rlbound train` and the lab put models


def save_model(model: TinyLlama, tokenizer: CharTokenizer, model_dir: str | Path,
               extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` and ``tokenizer`` to ``model_dir`` (created if missing); returns the dir.

    ``extra`` (JSON-able, e.g. how the model was trained) is stored under ``"meta"``.
    """
    path = Path(model_dir)
    path.mkdir(parents=True, exist_ok=True)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise RlboundError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the model {model.config.vocab_size}"
        )
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
    }
    save_file(state, str(path / WEIGHTS_FILE), metadata={"format": FORMAT})
    tokenizer.save(path)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model.config.to_dict()}
    if extra:
        meta["meta"] = extra
    (path / CONFIG_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return path


def load_config(model_dir: str | Path) -> tuple[TinyConfig, dict[str, Any]]:
    """The model config and the stored ``meta`` of a tiny model directory."""
    path = Path(model_dir)
    if not path.is_dir():
        raise RlboundError(f"tiny model directory '{model_dir}' does not exist")
    try:
        data = json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError:
        nested = [sub for sub in _NESTED_MODELS if (path / sub / CONFIG_FILE).is_file()]
        hint = f" (a training output? its model is '{path / nested[0]}')" if nested else ""
        raise RlboundError(f"tiny model directory '{model_dir}' has no {CONFIG_FILE}{hint}") from None
    except json.JSONDecodeError as err:
        raise RlboundError(f"'{path / CONFIG_FILE}' is not valid JSON: {err}") from None
    if data.get("format") != FORMAT:
        raise RlboundError(
            f"'{path / CONFIG_FILE}' is not a tiny model config (format {data.get('format')!r}); "
            "a Hugging Face model directory needs the 'hf' engine"
        )
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise RlboundError(
            f"'{path}' was written by a newer rlbound (format {data['format_version']})"
        )
    return TinyConfig.from_dict(data["model"]), data.get("meta", {})


def load_model(
    model_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[TinyLlama, CharTokenizer]:
    """Load the model (in eval mode) and tokenizer of a tiny model directory."""
    config, _ = load_config(model_dir)
    tokenizer = CharTokenizer.load(model_dir)
    weights = Path(model_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise RlboundError(f"tiny model directory '{model_dir}' has no {WEIGHTS_FILE}")
    model = TinyLlama(config)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:  # a damaged or truncated file
        raise RlboundError(f"'{weights}' cannot be read as safetensors weights ({exc})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not match the config
        first = str(exc).strip().splitlines()[-1].strip()
        raise RlboundError(f"'{weights}' does not match its config ({first})") from None
    if missing or unexpected:
        raise RlboundError(
            f"'{weights}' does not match its config "
            f"(missing: {missing[:3]}, unexpected: {unexpected[:3]})"
        )
    return model.to(device).eval(), tokenizer


def save_training_state(model_dir: str | Path, state: dict[str, Any]) -> None:
    """Store optimizer/scheduler/RNG state next to the weights (for ``resume=True``)."""
    torch.save(state, Path(model_dir) / TRAINING_STATE_FILE)


def load_training_state(model_dir: str | Path) -> dict[str, Any] | None:
    """The stored training state of ``model_dir``, or ``None`` if there is none."""
    path = Path(model_dir) / TRAINING_STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
