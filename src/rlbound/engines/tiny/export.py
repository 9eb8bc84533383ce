"""Export a tiny model to a Hugging Face ``LlamaForCausalLM`` directory.

The tiny transformer computes what ``LlamaForCausalLM`` computes, so the export is a renaming of
weights (splitting the fused ``qkv`` and ``gate_up`` matrices) plus a ``LlamaConfig``. The output
directory holds ``config.json``, ``generation_config.json``, ``model.safetensors`` and, as a
best effort, a character-level fast tokenizer (``tokenizer.json`` + ``tokenizer_config.json``)
equivalent to the tiny tokenizer, so that the ``hf`` engine and ``transformers`` can load the
export by path. The tiny tokenizer itself is copied as ``rlbound_tokenizer.json``.

``rlbound export-hf MODEL OUT`` calls :func:`export_hf` and prints :func:`export_summary`. The
files are written to a hidden sibling of ``OUT`` and moved in once complete; an ``OUT`` that exists
and is not empty is refused unless ``force`` (then the exported files replace their namesakes and
other files are left alone), and ``OUT`` may never be the model directory being read (the two
layouts share file names).

What it does not do: no import back from Hugging Face, no other architectures, no dtype
conversion (float32), no chat template. The fast tokenizer prepends ``<bos>`` when special tokens
are added (as the tiny engine does to every prompt); like the tiny tokenizer it has no UNK token
and refuses characters outside the vocabulary.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors.torch import save_file

from rlbound.engines.tiny.checkpoint import load_model
from rlbound.engines.tiny.model import TinyLlama
from rlbound.engines.tiny.tokenizer import SPECIALS, CharTokenizer
from rlbound.errors import RlboundError


def hf_state_dict(model: TinyLlama) -> dict[str, torch.Tensor]:
    """The model's weights under ``LlamaForCausalLM`` parameter names."""
    cfg = model.config
    d, ff = cfg.d_model, cfg.d_ff
    out = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm}
    for i, layer in enumerate(model.layers):
        pre = f"model.layers.{i}."
        q, k, v = layer.qkv.weight.split(d, dim=0)
        gate, up = layer.gate_up.weight.split(ff, dim=0)
        out.update({
            pre + "input_layernorm.weight": layer.attn_norm,
            pre + "self_attn.q_proj.weight": q,
            pre + "self_attn.k_proj.weight": k,
            pre + "self_attn.v_proj.weight": v,
            pre + "self_attn.o_proj.weight": layer.o.weight,
            pre + "post_attention_layernorm.weight": layer.mlp_norm,
            pre + "mlp.gate_proj.weight": gate,
            pre + "mlp.up_proj.weight": up,
            pre + "mlp.down_proj.weight": layer.down.weight,
        })
    if model.lm_head is not None:
        out["lm_head.weight"] = model.lm_head.weight
    return {k: t.detach().to("cpu", torch.float32).contiguous().clone() for k, t in out.items()}


def llama_config(model: TinyLlama, tokenizer: CharTokenizer):
    """The ``transformers.LlamaConfig`` describing ``model``."""
    from transformers import LlamaConfig

    cfg = model.config
    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta,  # transformers < 5
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},  # >= 5
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        architectures=["LlamaForCausalLM"],
    )


def _write_fast_tokenizer(tokenizer: CharTokenizer, out: Path) -> bool:
    """A ``tokenizers`` WordLevel model over single characters; False if that is unavailable."""
    try:
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    except ImportError:
        return False
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    vocab.update({c: tokenizer.encode(c)[0] for c in tokenizer.chars})
    fast = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
    fast.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    fast.decoder = decoders.Fuse()
    fast.add_special_tokens(list(SPECIALS))
    fast.post_processor = processors.TemplateProcessing(  # prompts start with <bos>, as in tiny
        single=f"{SPECIALS[1]} $A", special_tokens=[(SPECIALS[1], tokenizer.bos_id)]
    )
    fast.save(str(out / "tokenizer.json"))
    pad, bos, eos = SPECIALS
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos,
        "pad_token": pad, "clean_up_tokenization_spaces": False,
        "model_max_length": 1 << 30,
    }, indent=1) + "\n")
    return True


def _check_target(out: Path, source: Path | None, force: bool) -> None:
    if source is not None and out.resolve() == source.resolve():
        raise RlboundError(f"export-hf: '{out}' is the tiny model directory itself; choose another directory")
    if out.exists() and not out.is_dir():
        raise RlboundError(f"export-hf: '{out}' exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise RlboundError(f"export-hf: '{out}' exists and is not empty; choose another directory "
                           "or pass --force to replace the exported files in it")


def export_hf(model: str | Path | TinyLlama, out_dir: str | Path,
              tokenizer: CharTokenizer | None = None, *, force: bool = False) -> Path:
    """Write ``model`` (a tiny model directory or a :class:`TinyLlama`) as a Hugging Face
    ``LlamaForCausalLM`` directory at ``out_dir``; returns the directory.

    An ``out_dir`` that exists and is not empty is refused unless ``force``."""
    out = Path(out_dir)
    _check_target(out, Path(model) if isinstance(model, (str, Path)) else None, force)
    if isinstance(model, (str, Path)):
        model, tokenizer = load_model(model)
    tokenizer = tokenizer or CharTokenizer()
    from transformers import GenerationConfig

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.export-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        llama_config(model, tokenizer).save_pretrained(stage)
        GenerationConfig(
            bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id
        ).save_pretrained(stage)
        save_file(hf_state_dict(model), str(stage / "model.safetensors"), metadata={"format": "pt"})
        (stage / "rlbound_tokenizer.json").write_text(json.dumps(tokenizer.to_dict(), indent=1) + "\n")
        _write_fast_tokenizer(tokenizer, stage)
        out.mkdir(exist_ok=True)
        for file in sorted(stage.iterdir()):
            os.replace(file, out / file.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def export_summary(out_dir: str | Path) -> list[str]:
    """What an export directory holds, in a few lines for the command line."""
    from safetensors import safe_open

    out = Path(out_dir)
    cfg = json.loads((out / "config.json").read_text())
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        n_params = sum(int(torch.Size(weights.get_slice(k).get_shape()).numel()) for k in weights.keys())
    layers = cfg["num_hidden_layers"]
    tied = ", tied embeddings" if cfg.get("tie_word_embeddings") else ""
    files = ", ".join(
        f.name + (f" ({f.stat().st_size / 1e6:.1f} MB)" if f.name == "model.safetensors" else "")
        for f in sorted(out.iterdir()) if f.is_file()
    )
    lines = [
        f"{out}: {', '.join(cfg.get('architectures') or ['LlamaForCausalLM'])}, "
        f"{layers} layer{'s' * (layers != 1)}, hidden {cfg['hidden_size']}, {cfg['num_attention_heads']} heads, vocab {cfg['vocab_size']}, "
        f"{n_params:,} parameters (float32){tied}",
        f"files: {files}",
    ]
    if (out / "tokenizer.json").is_file():
        lines.append(f"load it with transformers (AutoModelForCausalLM / AutoTokenizer.from_pretrained('{out}')) "
                     f"or `rlbound sample --engine hf --model {out}`")
    else:
        lines.append("no fast tokenizer (the tokenizers package is missing): transformers loads the weights only")
    return lines
