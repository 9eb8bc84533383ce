"""The tiny decoder-only transformer: a Llama in miniature, in plain torch.

The architecture is exactly what Hugging Face's ``LlamaForCausalLM`` computes (pre-norm RMSNorm,
rotary position embeddings in the rotate-half convention, SwiGLU MLP, no biases, optional tied
embeddings), so :mod:`rlbound.engines.tiny.export` can write a real transformers checkpoint
from it. Two layout differences, undone by the export: the query/key/value projections are one
fused ``qkv`` matrix and the gate/up projections one fused ``gate_up`` matrix (fewer, larger
matmuls are what make small-batch CPU decoding fast).

The forward pass has two modes, and decoding a third:

* ``model(ids)``: full causal attention over a right-padded batch (training, scoring);
* ``model(ids, positions=..., cache=..., key_valid=...)``: writes keys/values into a
  :class:`KVCache` at its current length and attends over everything cached, honouring a
  per-row mask of valid key columns (left padding) and per-row positions. Prefill and one-token
  decode steps are both this call. A cache may also carry a *shared prefix*: the keys/values of a
  few prompts, each attended by all the rows (samples) that continue it, without copying them
  per row (:meth:`KVCache.with_shared_prefix`);
* :meth:`TinyLlama.decode_step`: that one-token step with the fused CPU kernels of
  :mod:`rlbound.engines.tiny.kernels` (inference only).

Formats: the weights and the cache may be float32 or bfloat16 (``model.to(torch.bfloat16)``, or
float32 weights under ``torch.autocast`` for training); attention probabilities, the final norm and
the logits are computed in float32 either way.

What it does not do: no grouped-query attention, no dropout, no RoPE scaling variants, no
sliding windows; the cache is a preallocated dense tensor (no paging).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from rlbound.errors import RlboundError


@dataclass(frozen=True)
class TinyConfig:
    """Shape of a tiny model (every field maps onto a ``LlamaConfig`` field on export)."""

    vocab_size: int = 99
    """Number of tokens (the character tokenizer has 99)."""
    d_model: int = 128
    """Residual width (``hidden_size``)."""
    n_layers: int = 4
    """Transformer blocks (``num_hidden_layers``)."""
    n_heads: int = 4
    """Attention heads; head size is ``d_model // n_heads`` (must be even for RoPE)."""
    d_ff: int = 384
    """SwiGLU hidden width (``intermediate_size``)."""
    max_seq_len: int = 256
    """Longest sequence, prompt plus completion, in tokens (``max_position_embeddings``)."""
    rope_theta: float = 10000.0
    """Rotary base frequency."""
    rms_norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    tie_embeddings: bool = False
    """Share the input embedding with the output projection (``tie_word_embeddings``)."""

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise RlboundError(
                f"tiny model: d_model ({self.d_model}) must be a multiple of n_heads "
                f"({self.n_heads}) with an even head size"
            )
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            if getattr(self, name) < 1:
                raise RlboundError(f"tiny model: {name} must be >= 1, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TinyConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RlboundError(f"tiny model config has unknown fields: {', '.join(unknown)}")
        return cls(**data)


class KVCache:
    """Keys and values, ``[n_layers, batch, heads, columns, head_dim]`` each, grown in blocks.

    All rows share one column counter ``length``; rows of different prompt lengths are
    left-padded and their pad columns masked by the caller's ``key_valid``. ``capacity`` is the
    most columns the cache may hold; the tensors hold ``allocated`` columns, grown by
    :data:`GROW_COLUMNS` at a time (:meth:`reserve`: one copy per block, not per token) and
    zero-filled, so that attention reads whole contiguous per-row matrices and masks the columns
    not yet written. (Slicing the first ``length`` columns out of a wider buffer instead makes the
    batched matmuls strided, which on CPU cost several times more, most of all in bfloat16.)
    """

    def __init__(self, config: TinyConfig, batch: int, capacity: int, device=None, dtype=None):
        shape = (config.n_layers, batch, config.n_heads, 0, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype or torch.float32)
        self.v = torch.zeros_like(self.k)
        self.capacity = capacity
        self.length = 0
        self.zero_fill = True  # see skip_zero_fill
        self.prefix_k: torch.Tensor | None = None  # [n_layers, prompts, heads, width, head_dim]
        self.prefix_v: torch.Tensor | None = None
        self.prefix_kt: torch.Tensor | None = None  # prefix_k transposed: [n_layers, prompts, heads, head_dim, width]
        self.prefix_valid: torch.Tensor | None = None  # [prompts, width] bool (left padding)
        self.row_prompt: torch.Tensor | None = None  # [batch] prompt of each row
        self.prefix_bias: torch.Tensor | None = None  # [prompts, width] 0 / -inf, None if no padding

    @classmethod
    def with_shared_prefix(cls, prefix: "KVCache", prefix_valid: torch.Tensor,
                           row_prompt: torch.Tensor, capacity: int, dtype=None) -> "KVCache":
        """A cache for ``len(row_prompt)`` rows whose row ``i`` continues prompt
        ``row_prompt[i]`` of the filled ``prefix`` cache (one row per prompt, left-padded, pad
        columns ``False`` in ``prefix_valid``); ``capacity`` columns for the rows' own tokens, in
        ``dtype`` (default the prefix's). The prefix keeps its own format (every row reads it:
        the fused kernels read it in float32 without a conversion per row)."""
        new = cls.__new__(cls)
        n = prefix.length
        dtype = dtype or prefix.k.dtype
        shape = list(prefix.k.shape)
        shape[1], shape[3] = len(row_prompt), 0
        new.k = prefix.k.new_zeros(shape, dtype=dtype)
        new.v = torch.zeros_like(new.k)
        new.capacity, new.length, new.zero_fill = capacity, 0, True
        new.prefix_k = prefix.k[:, :, :, :n].contiguous()
        new.prefix_v = prefix.v[:, :, :, :n].contiguous()
        new.prefix_kt = new.prefix_k.transpose(-1, -2).contiguous()  # the fused kernels' layout
        new.prefix_valid, new.row_prompt = prefix_valid[:, :n], row_prompt
        new.prefix_bias = None
        if not bool(new.prefix_valid.all()):
            new.prefix_bias = torch.zeros(new.prefix_valid.shape, dtype=new.prefix_k.dtype, device=new.k.device)
            new.prefix_bias.masked_fill_(~new.prefix_valid, float("-inf"))
        return new

    @property
    def allocated(self) -> int:
        return self.k.shape[3]

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def reserve(self, columns: int) -> None:
        """Make room for ``columns`` columns (grown to a multiple of ``GROW_COLUMNS``, at most
        ``capacity``); the written columns are kept."""
        if columns <= self.allocated:
            return
        if columns > self.capacity:
            raise RlboundError(f"tiny model: KV cache of {self.capacity} columns is full")
        width = min(self.capacity, -(-columns // GROW_COLUMNS) * GROW_COLUMNS)
        self.k, self.v = self._widened(self.k, width), self._widened(self.v, width)

    def _widened(self, data: torch.Tensor, width: int) -> torch.Tensor:
        shape = list(data.shape)
        shape[3] = width
        wider = data.new_zeros(shape) if self.zero_fill else data.new_empty(shape)
        wider[:, :, :, : self.length] = data[:, :, :, : self.length]
        return wider

    def skip_zero_fill(self) -> None:
        """Leave columns not yet written uninitialised when the cache grows or drops rows (only the
        written columns are copied): for readers that never look past them (the fused decoding
        kernels). The eager attention reads whole blocks and needs the zeros."""
        self.zero_fill = False

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (a 1-D index tensor), in that order (drops finished samples)."""
        if not self.zero_fill:  # copy the written columns only
            for name in ("k", "v"):
                data = getattr(self, name)
                shape = list(data.shape)
                shape[1] = len(rows)
                kept = data.new_empty(shape)
                torch.index_select(data[:, :, :, : self.length], 1, rows, out=kept[:, :, :, : self.length])
                setattr(self, name, kept)
        else:
            self.k = self.k.index_select(1, rows)
            self.v = self.v.index_select(1, rows)
        if self.row_prompt is not None:
            self.row_prompt = self.row_prompt.index_select(0, rows)

    def expanded(self, rows: torch.Tensor, capacity: int, dtype=None) -> "KVCache":
        """A new cache of ``capacity`` columns whose row ``i`` copies this cache's ``rows[i]``
        (in ``dtype``, default this cache's)."""
        new = KVCache.__new__(KVCache)
        n = self.length
        new.k = self.k[:, :, :, :n].index_select(1, rows).to(dtype or self.k.dtype)
        new.v = self.v[:, :, :, :n].index_select(1, rows).to(dtype or self.k.dtype)
        new.capacity, new.length, new.zero_fill = capacity, n, True
        new.prefix_k = new.prefix_kt = new.prefix_v = new.prefix_valid = new.row_prompt = new.prefix_bias = None
        return new


GROW_COLUMNS = 32
"""Columns a :class:`KVCache` grows by at a time."""


def rope_tables(config: TinyConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin, ``[max_seq_len, head_dim]``, computed as transformers' Llama does.

    Llama rotates ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = [-x2, x1]``; the
    returned sin has its first half negated so that ``x * cos + [x2, x1] * sin`` is the same
    value with one operation fewer.
    """
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    freqs = torch.arange(config.max_seq_len, dtype=torch.float)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    sin = emb.sin()
    sin[:, : dim // 2] = -sin[:, : dim // 2]
    return emb.cos(), sin


def _softmax(scores: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Softmax over the last axis computed in float32 (as transformers' eager attention does in
    half precision), returned in ``dtype``."""
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(dtype)


EXPLICIT_ATTENTION_MAX_LEN = 192
"""Longest bfloat16 sequence whose causal attention is computed as two matmuls around a float32
softmax rather than by torch's fused kernel: on CPU the fused (flash) kernel's backward pass in
bfloat16 made a training step 1.3-1.5x slower at 96-160 tokens, and faster from 256 on (measured
with bench/bench_tiny_vs_hf.py's training workload)."""


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal self-attention of ``[b, heads, t, head_dim]`` queries, keys and values (no cache).

    In float32, and for long bfloat16 sequences, torch's fused kernel; short bfloat16 sequences
    (the lab's training batches) take the explicit form (see :data:`EXPLICIT_ATTENTION_MAX_LEN`):
    scores and softmax in float32, as the fused kernel keeps them (no slower here than scores
    rounded to bfloat16), the probabilities times the values in bfloat16."""
    t = q.shape[2]
    if v.dtype != torch.bfloat16 or t > EXPLICIT_ATTENTION_MAX_LEN:  # (under autocast RoPE makes q, k float32)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    future = torch.full((t, t), float("-inf"), device=q.device).triu_(1)  # additive: no mask in backward
    with torch.autocast(q.device.type, enabled=False):  # scores in float32, as the fused kernel keeps them
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5 + future
        probs = _softmax(scores, v.dtype)
    return torch.matmul(probs, v)


def _swap_halves(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((x[..., half:], x[..., :half]), dim=-1)


@dataclass
class DecodeBias:
    """Additive masks (0 or -inf) of one decoding step, shared by every layer.

    ``own``: over the cache's allocated columns, ``[1, 1, columns]`` (columns not written yet) or
    ``[batch * heads, 1, columns]`` (also each row's left padding); ``prefix``: over the shared
    prompt prefix, ``[batch, 1, width]``, or ``None`` when no prompt of the prefix is padded.
    """

    own: torch.Tensor
    prefix: torch.Tensor | None


@dataclass
class DecodeTables:
    """Float32 copies a fused decoding step reads (:meth:`TinyLlama.decode_tables`): the rotary
    tables ``[max_seq_len, head_dim]``, the final norm's weight and the output projection; and
    for the whole-layer kernel (bfloat16 weights on a CPU with AVX512-BF16) the layers' weights
    packed for its dot products, else None."""

    cos: torch.Tensor
    sin: torch.Tensor
    norm: torch.Tensor
    head: torch.Tensor
    layers: "PackedLayers | None" = None


@dataclass(frozen=True)
class PackedLayers:
    """Every layer's weights, stacked ``[n_layers, ...]``, as ``decode_layers`` reads them: the
    norms as they are, each linear weight ``[n, k]`` as ``[n / 16, k / 2, 16, 2]`` (a pair of
    inputs for 16 outputs per 64 bytes)."""

    attn_norm: torch.Tensor
    qkv: torch.Tensor
    o: torch.Tensor
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor

    @staticmethod
    def pack(weight: torch.Tensor) -> torch.Tensor:
        n, k = weight.shape
        return weight.detach().reshape(n // 16, 16, k // 2, 2).transpose(1, 2).contiguous()

    @classmethod
    def of(cls, layers) -> "PackedLayers":
        def stack(get):
            return torch.stack([get(layer) for layer in layers]).contiguous()
        return cls(stack(lambda b: b.attn_norm.detach()), stack(lambda b: cls.pack(b.qkv.weight)),
                   stack(lambda b: cls.pack(b.o.weight)), stack(lambda b: b.mlp_norm.detach()),
                   stack(lambda b: cls.pack(b.gate_up.weight)), stack(lambda b: cls.pack(b.down.weight)))


class Block(nn.Module):
    def __init__(self, config: TinyConfig):
        super().__init__()
        d = config.d_model
        self.n_heads, self.head_dim, self.d_ff = config.n_heads, config.head_dim, config.d_ff
        self.eps = config.rms_norm_eps
        self.attn_norm = nn.Parameter(torch.ones(d))
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.mlp_norm = nn.Parameter(torch.ones(d))
        self.gate_up = nn.Linear(d, 2 * config.d_ff, bias=False)
        self.down = nn.Linear(config.d_ff, d, bias=False)

    def forward(self, x, cos, sin, layer_kv=None, start=0, mask=None):
        b, t, d = x.shape
        h = F.rms_norm(x, (d,), self.attn_norm, self.eps)
        qkv = self.qkv(h).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # RoPE on q and k at once; ``sin`` carries the sign of rotate_half (see rope_tables)
        qk = qkv[:2] * cos + _swap_halves(qkv[:2]) * sin
        q, k, v = qk[0], qk[1], qkv[2]  # [b, heads, t, head_dim]
        if layer_kv is None:
            att = causal_attention(q, k, v)
        elif isinstance(mask, DecodeBias):
            att = self._decode_attention(q, k, v, layer_kv, start, mask)
        else:
            att = self._cached_attention(q, k, v, layer_kv, start, mask)
        x = x + self.o(att.transpose(1, 2).reshape(b, t, d))
        h = F.rms_norm(x, (d,), self.mlp_norm, self.eps)
        gate, up = self.gate_up(h).split(self.d_ff, dim=-1)
        return x + self.down(F.silu(gate) * up)

    def _decode_attention(self, q, k, v, layer_kv, start, bias: "DecodeBias"):
        """One query per row (a decoding step), with the masks of :class:`DecodeBias` computed
        once per step for every layer: the scale and the mask go into the score matmul
        (``baddbmm``), and a shared prefix of one prompt is a plain per-head GEMM (no gather)."""
        keys, values, prefix = layer_kv
        keys[:, :, start : start + 1] = k
        values[:, :, start : start + 1] = v
        b, heads, _, hd = q.shape
        cols = keys.shape[2]
        q = (q.to(keys.dtype) * hd ** -0.5).reshape(b * heads, 1, hd)
        scores = torch.baddbmm(bias.own, q,
                               keys.view(b * heads, cols, hd).transpose(1, 2))  # [b*heads, 1, cols]
        if prefix is None:
            out = torch.bmm(_softmax(scores, values.dtype), values.view(b * heads, cols, hd))
            return out.view(b, heads, 1, hd).to(k.dtype)
        pk, pv, _, row_prompt = prefix  # [prompts, heads, width, head_dim]
        q_heads = q.view(b, heads, hd).transpose(0, 1)  # [heads, b, head_dim]
        if pk.shape[0] == 1:
            p_scores = torch.matmul(q_heads, pk[0].transpose(1, 2)).transpose(0, 1)  # [b, heads, width]
        else:
            rows = torch.arange(b, device=q.device)
            p_scores = torch.matmul(q_heads[None], pk.transpose(-1, -2))[row_prompt, :, rows]
        if bias.prefix is not None:
            p_scores = p_scores + bias.prefix
        width = p_scores.shape[-1]
        probs = _softmax(torch.cat([p_scores.unsqueeze(2), scores.view(b, heads, 1, cols)], dim=-1),
                         values.dtype)  # [b, heads, 1, width + cols]
        out = torch.matmul(probs[..., width:], values.view(b, heads, cols, hd))  # [b, heads, 1, hd]
        p_probs = probs[:, :, 0, :width].transpose(0, 1)  # [heads, b, width]
        if pk.shape[0] == 1:
            p_out = torch.matmul(p_probs, pv[0]).transpose(0, 1)  # [b, heads, hd]
        else:
            p_out = torch.matmul(p_probs[None], pv)[row_prompt, :, rows]
        return out.add_(p_out.unsqueeze(2)).to(k.dtype)

    def _cached_attention(self, q, k, v, layer_kv, start, mask):
        """Attention of several queries per row (a prefill) over the cached columns (after writing
        ``k``, ``v`` into them) and, if the cache has one, over each row's shared prompt prefix,
        with ``mask`` the boolean ``[b or 1, 1, t, end]`` visibility. One query per row (a
        decoding step) goes through :meth:`_decode_attention` instead."""
        keys, values, prefix = layer_kv  # every allocated column: whole contiguous matrices
        t = q.shape[2]
        end = start + t
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        q = q.to(keys.dtype)  # the cache's format (float32 for bfloat16 weights: see KVCache)
        scale = self.head_dim ** -0.5
        scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(scale)  # [b, heads, t, allocated]
        scores[..., :end].masked_fill_(~mask, float("-inf"))
        if scores.shape[-1] > end:  # columns not written yet
            scores[..., end:] = float("-inf")
        if prefix is None:
            return torch.matmul(_softmax(scores, values.dtype), values).to(k.dtype)
        # shared prefix: one GEMM of all queries against every prompt's keys ([P, heads, b*t, w]),
        # then each row keeps its own prompt's block
        pk, pv, p_valid, row_prompt = prefix
        b, heads, _, hd = q.shape
        rows = torch.arange(b, device=q.device)
        q_flat = q.transpose(0, 1).reshape(1, heads, b * t, hd)
        p_scores = torch.matmul(q_flat, pk.transpose(-1, -2)).mul_(scale)  # [P, heads, b*t, w]
        p_scores = p_scores.view(p_scores.shape[0], heads, b, t, -1)[row_prompt, :, rows]
        p_scores = p_scores.masked_fill_(~p_valid[row_prompt][:, None, None, :], float("-inf"))
        width = p_scores.shape[-1]
        probs = _softmax(torch.cat([p_scores, scores], dim=-1), values.dtype)
        out = torch.matmul(probs[..., width:], values)
        p_probs = probs[..., :width].transpose(0, 1).reshape(1, heads, b * t, width)
        p_out = torch.matmul(p_probs, pv).view(pv.shape[0], heads, b, t, hd)[row_prompt, :, rows]
        return (out + p_out).to(k.dtype)


class TinyLlama(nn.Module):
    """The tiny model; see the module docstring for the two forward modes."""

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.Parameter(torch.ones(config.d_model))
        self.lm_head = None if config.tie_embeddings else nn.Linear(
            config.d_model, config.vocab_size, bias=False
        )
        cos, sin = rope_tables(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2-style init: N(0, 0.02), residual outputs scaled by 1/sqrt(2 * n_layers)."""
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith(("o.weight", "down.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.config.n_layers))
            else:
                nn.init.normal_(p, 0.0, std)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def output_weight(self) -> torch.Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def _decode_bias(self, cache: KVCache, key_valid: torch.Tensor | None, start: int) -> DecodeBias:
        cols = cache.allocated
        unwritten = torch.arange(cols, device=cache.k.device) > start
        if key_valid is None:
            own = torch.zeros((1, 1, cols), dtype=cache.k.dtype, device=cache.k.device)
            own.masked_fill_(unwritten, float("-inf"))
        else:
            hidden = unwritten | ~key_valid[:, :cols]  # [batch, columns]
            hidden[:, start] = False  # a token always sees itself
            own = torch.zeros(hidden.shape, dtype=cache.k.dtype, device=cache.k.device)
            own = own.masked_fill_(hidden, float("-inf")).repeat_interleave(self.config.n_heads, dim=0)
            own = own.unsqueeze(1)
        prefix = None
        if cache.prefix_bias is not None:
            prefix = cache.prefix_bias.index_select(0, cache.row_prompt).unsqueeze(1)
        return DecodeBias(own, prefix)

    def decode_tables(self, kernels=None) -> "DecodeTables":
        """The float32 tables a fused decoding step reads besides the weights (made once per
        batch of decoding steps, not per step), with the packed layers when ``kernels`` can run
        them (bfloat16 weights, AVX512-BF16, ``d_model`` and ``2 d_ff`` multiples of 64)."""
        packed = self._packed_layers() if self.fits_layer_kernel(kernels) else None
        return DecodeTables(self.rope_cos.float().contiguous(), self.rope_sin.float().contiguous(),
                            self.norm.float(), self.output_weight().float(), packed)

    def _packed_layers(self) -> "PackedLayers":
        """The layers packed, kept until a weight changes (an optimiser step bumps its version)."""
        key = tuple((p.data_ptr(), p._version) for p in self.layers.parameters())
        cached = getattr(self, "_packed_cache", None)
        if cached is None or cached[0] != key:
            cached = self._packed_cache = (key, PackedLayers.of(self.layers))
        return cached[1]

    def fits_layer_kernel(self, kernels) -> bool:
        """Whether fused decoding with ``kernels`` runs every layer in one call (``decode_layers``):
        bfloat16 weights, a CPU with AVX512-BF16, ``d_model`` and ``2 d_ff`` multiples of 64."""
        cfg = self.config
        return (kernels is not None and self.embed.weight.dtype == torch.bfloat16 and kernels.bf16_dot_available()
                and cfg.d_model % 64 == 0 and (2 * cfg.d_ff) % 64 == 0)

    def decode_step(self, ids: torch.Tensor, positions: torch.Tensor, cache: KVCache,
                    key_valid: torch.Tensor | None, kernels, tables: "DecodeTables") -> torch.Tensor:
        """Float32 logits ``[batch, vocab]`` of one new token per row (``ids``, ``positions``:
        ``[batch]``), the same step as ``model(ids[:, None], positions[:, None], cache, key_valid,
        last_only=True)`` computed with the fused CPU ``kernels``
        (:func:`rlbound.engines.tiny.kernels.fused_kernels`) and :meth:`decode_tables`: with
        packed layers (:meth:`fits_layer_kernel`) every layer in one call; else per layer two
        RMSNorms, the attention and the SwiGLU gate are one kernel call each, the residual adds go
        into torch's matmuls (``addmm``). A position beyond ``max_seq_len`` is an error of the
        attention kernel. Inference only (no autograd)."""
        start = cache.length
        cache.reserve(start + 1)
        prefix_bias = cache.prefix_bias
        x = self.embed(ids)
        if tables.layers is not None:  # every layer in one kernel call
            packed = tables.layers
            x = kernels.decode_layers(x, packed.attn_norm, packed.qkv, packed.o, packed.mlp_norm, packed.gate_up,
                                      packed.down, self.config.rms_norm_eps, tables.cos, tables.sin, positions,
                                      cache.k, cache.v, start, key_valid, cache.prefix_kt, cache.prefix_v,
                                      cache.row_prompt, prefix_bias)
        else:  # per layer: the kernels around torch's matmuls
            for i, layer in enumerate(self.layers):
                prefix_kt = prefix_v = None
                if cache.prefix_kt is not None:
                    prefix_kt, prefix_v = cache.prefix_kt[i], cache.prefix_v[i]
                qkv = F.linear(kernels.rms_norm(x, layer.attn_norm, layer.eps), layer.qkv.weight)
                att = kernels.decode_attention(qkv, tables.cos, tables.sin, positions, cache.k[i], cache.v[i], start,
                                               key_valid, prefix_kt, prefix_v, cache.row_prompt, prefix_bias)
                x = torch.addmm(x, att, layer.o.weight.t())
                gate_up = F.linear(kernels.rms_norm(x, layer.mlp_norm, layer.eps), layer.gate_up.weight)
                x = torch.addmm(x, kernels.silu_mul(gate_up), layer.down.weight.t())
        cache.length = start + 1
        return F.linear(kernels.rms_norm(x.float(), tables.norm, self.config.rms_norm_eps), tables.head)

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        key_valid: torch.Tensor | None = None,
        last_only: bool = False,
        hidden: bool = False,
    ) -> torch.Tensor:
        """Logits ``[batch, t, vocab]`` (``[batch, vocab]`` with ``last_only``); with ``hidden``
        the final normalised hidden states ``[batch, t, d_model]`` instead (a value head's input).

        Without ``cache``: plain causal attention, positions ``0..t-1`` unless given.
        With ``cache``: the ``t`` new tokens occupy cache columns ``length .. length+t-1``;
        ``key_valid`` (``[batch, length+t]`` bool) marks real (non-pad) columns, and each token
        attends to valid columns up to its own (always including itself), after its row's shared
        prefix if the cache has one.
        """
        b, t = ids.shape
        if positions is None:
            start = cache.length if cache is not None else 0
            last_position = start + t - 1  # a Python int: no graph break when compiled
            positions = torch.arange(start, start + t, device=ids.device).expand(b, t)
        else:
            last_position = int(positions.max())
        if last_position >= self.config.max_seq_len:
            raise RlboundError(
                f"tiny model: position {last_position} is beyond max_seq_len {self.config.max_seq_len}"
            )
        cos = self.rope_cos[positions].unsqueeze(1)  # [b, 1, t, head_dim]
        sin = self.rope_sin[positions].unsqueeze(1)
        x = self.embed(ids)
        if cache is None:
            for layer in self.layers:
                x = layer(x, cos, sin)
        else:
            start = cache.length
            end = start + t
            cache.reserve(end)
            if t == 1:  # a decoding step: additive masks, built once for every layer
                mask = self._decode_bias(cache, key_valid, start)
            else:
                cols = torch.arange(end, device=ids.device)
                qcols = cols[start:, None]
                visible = cols[None, :] <= qcols  # causal, [t, end]
                if key_valid is not None:
                    visible = visible & (key_valid[:, None, :end] | (cols[None, :] == qcols)[None])
                    mask = visible[:, None]  # [b, 1, t, end]
                else:
                    mask = visible[None, None]
            for i, layer in enumerate(self.layers):
                prefix = None
                if cache.prefix_k is not None:
                    prefix = (cache.prefix_k[i], cache.prefix_v[i], cache.prefix_valid,
                              cache.row_prompt)
                x = layer(x, cos, sin, (cache.k[i], cache.v[i], prefix), start, mask)
            cache.length = end
        if last_only:
            x = x[:, -1]
        # the final norm and the logits in float32 whatever the weights' format: log-probs and
        # entropies are read off them (a no-op for a float32 model)
        with torch.autocast(x.device.type, enabled=False):  # bfloat16 training: these stay float32
            x = F.rms_norm(x.float(), (self.config.d_model,), self.norm.float(), self.config.rms_norm_eps)
            return x if hidden else F.linear(x, self.output_weight().float())
