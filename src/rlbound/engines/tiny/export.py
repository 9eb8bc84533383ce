"""Export a tiny model to a Hugging Face ``LlamaForCausalLM`` directory.

The tiny transformer computes what ``LlamaForCausalLM`` computes, so the export is a renaming of
weights (splitting the fused ``qkv`` and ``gate_up`` matrices) plus a ``LlamaConfig``. The output
directory holds ``config.json``, ``generation_config.json``, ``model.safetensors`` and, as a
best effort, a character-level fast tokenizer (``tokenizer.json`` + ``tokenizer_config.json``)
equivalent to the tiny tokenizer, so that the ``hf`` engine and ``transformers`` can load the
export by path. The tiny tokenizer itself is copied as ``rlbound_tokenizer.json``.

What it does not do: no import back from Hugging Face, no other architectures, no dtype
conversion (float32), no chat template. The fast tokenizer prepends ``<bos>`` when special tokens
are added (as the tiny engine does to every prompt); like the tiny tokenizer it has no UNK token
and refuses characters outside the vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from rlbound.engines.tiny.checkpoint import load_model
from rlbound.engines.tiny.model import TinyLlama
from rlbound.engines.tiny.tokenizer import SPECIALS, CharTokenizer


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


def export_hf(model: str | Path | TinyLlama, out_dir: str | Path,
              tokenizer: CharTokenizer | None = None) -> Path:
    """Write ``model`` (a tiny model directory or a :class:`TinyLlama`) as a Hugging Face
    ``LlamaForCausalLM`` directory at ``out_dir``; returns the directory."""
    from transformers import GenerationConfig

    if isinstance(model, (str, Path)):
        model, tokenizer = load_model(model)
    tokenizer = tokenizer or CharTokenizer()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = llama_config(model, tokenizer)
    config.save_pretrained(out)
    GenerationConfig(
        bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id
    ).save_pretrained(out)
    save_file(hf_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "rlbound_tokenizer.json").write_text(json.dumps(tokenizer.to_dict(), indent=1) + "\n")
    _write_fast_tokenizer(tokenizer, out)
    return out
