"""The ``tiny`` engine: batched CPU sampling and scoring for tiny model directories.

``generate`` samples with a KV cache. Each batch holds up to ``batch_size`` samples; the distinct
prompts in it are left-padded and prefilled once. When a batch has few distinct prompts (the
common case: many samples of one prompt) every sample attends to its prompt's single cached
copy (a shared prefix); otherwise the prompt's cache rows are copied to its samples. Rows are
independent: pad columns are masked, positions restart at 0 after each row's padding, and every
token is chosen by
:func:`rlbound.engines.sampling.sample_next` from the row's own seed and the decoding step, so a
sample does not depend on what else is in its batch (up to float rounding). Rows that finish are
dropped from the cache once enough of them have, so long stragglers do not pay for finished rows;
when only a few stragglers are left and more rows wait, they are deferred and sampled again, from
the start, in batches of stragglers (:data:`DEFER_BELOW`).

Conventions (documented in :class:`~rlbound.engines.base.Sample` terms):

* the prompt is encoded as ``<bos>`` + its characters; a prompt needs fewer than
  ``max_seq_len`` tokens, and prompt plus completion never exceed ``max_seq_len`` (a sample cut
  there finishes with ``"length"``);
* a sample ending at ``<eos>`` has ``finish_reason="stop"``; the EOS token is the last entry of
  ``token_ids`` / ``token_logprobs`` / ``token_entropies`` (it is part of the sequence's
  likelihood) but not of ``text``;
* a sample ending at a ``params.stop`` string has ``finish_reason="stop"`` and the stop string is
  removed from ``text`` *and* from the token lists (tokens are characters, so the cut is exact);
* ``score(prompt, completion)`` returns one entry per completion character (no EOS), equal up to
  float rounding to what ``generate`` reported for the same tokens.

Decoding steps run the fused CPU kernels of :mod:`rlbound.engines.tiny.kernels` where they build
(``decode="auto"``, the default; ``"fused"`` requires them, ``"eager"`` uses the model's torch
operations); the KV cache of the rows' own tokens is then in the weights' format, and the columns
not yet written are not zero-filled (the kernels never read them).

Threads: the engine uses torch's process-wide thread setting. On an idle 2-core machine two
threads decode a 256-sample batch about 1.5x faster than one; but while another process keeps a
core busy, two OpenMP threads run several times *slower* than one (barrier waits), so on a
shared machine call ``torch.set_num_threads(1)`` (or start with ``OMP_WAIT_POLICY=PASSIVE``).

What it does not do: no continuous batching (a batch runs until its longest sample ends or is
deferred; a deferred sample is recomputed, not resumed), no
speculative decoding, no quantisation; ``device`` other than ``"cpu"`` works but is untuned.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from rlbound.engines.base import (
    Engine,
    EngineInfo,
    Sample,
    SamplingParams,
    TokenScores,
    check_engine_options,
    register_engine,
)
from rlbound.engines.precision import dtype_name, resolve_dtype
from rlbound.engines.sampling import NextTokens, logprobs_and_entropies, premixed_seeds, sample_next
from rlbound.engines.tiny.checkpoint import WEIGHTS_FILE, load_model
from rlbound.engines.tiny.kernels import fused_kernels, resolve_decode
from rlbound.engines.tiny.model import KVCache, TinyLlama
from rlbound.engines.tiny.tokenizer import CharTokenizer
from rlbound.errors import RlboundError

_U64 = (1 << 64) - 1
_STOP_EOS, _STOP_STRING, _LENGTH = 1, 2, 3
COMPACT_BELOW = 0.75
"""Drop finished rows from the cache once at most this fraction of its rows is still running."""
KV_CACHE_DTYPE = torch.float32
"""The cache's format in eager decoding and prefill, whatever the weights': eager attention
during decoding is a batch of matrix-vector products, which on CPU run faster in float32 than in
bfloat16 (measured in bench/bench_tiny_vs_hf.py); the projections around it run in the weights'
format. Fused decoding (:mod:`rlbound.engines.tiny.kernels`) keeps the rows' own columns in the
weights' format instead (bfloat16 halves the memory its attention reads; the keys and values are
bfloat16 numbers either way) and the prompt's in float32."""
DEFER_BELOW = 1 / 16
"""A batch with more rows to come stops once at most this fraction of ``batch_size`` rows is still
running; those stragglers are sampled again from the start, all together, after the other rows.
A handful of long samples would otherwise keep a batch running for many steps, each costing
about what a full step does (on CPU a small decoding step is all per-operation overhead); the
restart reproduces them (tokens depend only on the row's seed and step, up to float rounding)
and costs the few tokens they had generated."""
SHARED_PREFIX_MAX_PROMPTS = 8
"""In eager decoding, batches with at most this many distinct prompts keep one copy of each
prompt's keys/values, attended by all its samples; batches with more copy the prompt into every
row (the eager attention gathers a shared prompt per row). Fused decoding always shares: its
attention kernel finds a row's prompt by index, and the rows of one prompt then read the same
keys while they are in cache (1.2-1.7x faster on 16 prompts x 16 samples than copies)."""


def _cut_stop(tokens: list[int], tokenizer: CharTokenizer, n_chars: int) -> list[int]:
    """``tokens`` without the trailing tokens that spell the last ``n_chars`` characters."""
    end = len(tokens)
    removed = 0
    while removed < n_chars and end > 0:
        end -= 1
        removed += len(tokenizer.token_text(tokens[end]))
    return tokens[:end]


@register_engine("tiny")
class TinyEngine(Engine):
    """Sampling and scoring with a tiny model directory (see the module docstring)."""

    name = "tiny"

    def __init__(self, model_dir: str, batch_size: int = 256, device: str = "cpu", dtype: str = "auto",
                 decode: str = "auto", **kw):
        check_engine_options("tiny", kw, ("batch_size", "device", "dtype", "decode"))
        if batch_size < 1:
            raise RlboundError(f"tiny engine: batch_size must be >= 1, got {batch_size}")
        chosen = resolve_dtype(dtype, device, what="tiny engine: dtype")
        mode = resolve_decode(decode, torch.device(device))
        model, tokenizer = load_model(model_dir, device=device)
        self._setup(model.to(chosen), tokenizer, str(model_dir), batch_size, device, mode)

    @classmethod
    def from_model(cls, model: TinyLlama, tokenizer: CharTokenizer, batch_size: int = 256,
                   label: str = "<in-memory tiny model>", decode: str = "auto") -> "TinyEngine":
        """An engine over a model already in memory, in its own format (used during training; no
        copy is made)."""
        engine = cls.__new__(cls)
        device = str(next(model.parameters()).device)
        engine._setup(model, tokenizer, label, batch_size, device, resolve_decode(decode, torch.device(device)))
        return engine

    def _setup(self, model, tokenizer, model_dir, batch_size, device, decode: str) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.model_dir, self.batch_size, self.device = model_dir, batch_size, torch.device(device)
        self.config = model.config
        self.dtype = next(model.parameters()).dtype
        self.decode = decode
        self._kernels = fused_kernels() if decode == "fused" else None
        self._weights_digest: str | None = None

    # -- generate ------------------------------------------------------------------------------

    def _encode_prompt(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt, bos=True)
        if len(ids) >= self.config.max_seq_len:
            raise RlboundError(
                f"tiny engine: prompt of {len(ids)} tokens leaves no room to generate "
                f"(max_seq_len {self.config.max_seq_len}): {prompt[:40]!r}..."
            )
        return ids

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seeds: Sequence[Sequence[int]]
    ) -> list[list[Sample]]:
        if len(seeds) != len(prompts):
            raise RlboundError(f"generate: {len(prompts)} prompts but {len(seeds)} seed lists")
        encoded = [self._encode_prompt(p) for p in prompts]
        results: list[list[Sample | None]] = [[None] * len(s) for s in seeds]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        rows = [(i, j, int(seed)) for i in order for j, seed in enumerate(seeds[i])]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                deferred: list[tuple[int, int, int]] = []
                for start in range(0, len(rows), self.batch_size):
                    chunk = rows[start : start + self.batch_size]
                    more = start + self.batch_size < len(rows) or bool(deferred)
                    defer_at = int(DEFER_BELOW * self.batch_size) if more else 0
                    samples, late = self._generate_batch(encoded, chunk, params, defer_at)
                    for r, ((i, j, _), sample) in enumerate(zip(chunk, samples)):
                        if r in late:
                            deferred.append(chunk[r])
                        else:
                            results[i][j] = sample
                for start in range(0, len(deferred), self.batch_size):  # the stragglers, together
                    chunk = deferred[start : start + self.batch_size]
                    samples, _ = self._generate_batch(encoded, chunk, params, 0)
                    for (i, j, _), sample in zip(chunk, samples):
                        results[i][j] = sample
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    def _generate_batch(self, encoded, chunk, params: SamplingParams, defer_at: int = 0
                        ) -> tuple[list[Sample], set[int]]:
        """The samples of ``chunk``'s rows, and the rows given up on (deferred): once at most
        ``defer_at`` rows are still running, the batch stops and those rows' samples are left
        unfinished, to be sampled again from the start in a batch of stragglers."""
        model, tok, cfg, dev = self.model, self.tokenizer, self.config, self.device
        local: dict[int, int] = {}
        for i, _, _ in chunk:
            local.setdefault(i, len(local))
        prompt_ids = list(local)
        lens = [len(encoded[i]) for i in prompt_ids]
        width = max(lens)
        ids = torch.full((len(prompt_ids), width), tok.pad_id, dtype=torch.long)
        valid = torch.zeros((len(prompt_ids), width), dtype=torch.bool)
        for p, (i, n) in enumerate(zip(prompt_ids, lens)):
            ids[p, width - n :] = torch.tensor(encoded[i])
            valid[p, width - n :] = True
        positions = (valid.long().cumsum(1) - 1).clamp_(min=0)
        ids, valid, positions = ids.to(dev), valid.to(dev), positions.to(dev)

        row_prompt = torch.tensor([local[i] for i, _, _ in chunk], device=dev)
        n_rows = len(chunk)
        row_len = torch.tensor(lens, device=dev)[row_prompt]
        row_limit = (cfg.max_seq_len - row_len).clamp_(max=params.max_tokens)
        max_new = int(row_limit.max())

        prefill = KVCache(cfg, len(prompt_ids), width, device=dev, dtype=KV_CACHE_DTYPE)
        logits = model(ids, positions=positions, cache=prefill, key_valid=valid, last_only=True)
        logits = logits.index_select(0, row_prompt)
        key_valid = None
        # the fused kernels read the cache in the weights' format (bfloat16 halves its traffic)
        cache_dtype = self.dtype if self._kernels is not None else KV_CACHE_DTYPE
        shared = self._kernels is not None or len(prompt_ids) <= SHARED_PREFIX_MAX_PROMPTS
        if shared:  # rows attend their prompt's one copy
            cache = KVCache.with_shared_prefix(prefill, valid, row_prompt, max_new, cache_dtype)
        else:  # each row gets its own copy of its prompt's keys/values
            cache = prefill.expanded(row_prompt, width + max_new, cache_dtype)
            key_valid = torch.ones((n_rows, width + max_new), dtype=torch.bool, device=dev)
            key_valid[:, :width] = valid.index_select(0, row_prompt)
        tables = None
        if self._kernels is not None:
            cache.skip_zero_fill()
            tables = model.decode_tables(self._kernels)
        del prefill
        pos = row_len.clone()

        all_seeds = np.array([s & _U64 for _, _, s in chunk], dtype=np.uint64)
        seeds_cur = all_seeds
        premixed_all = torch.from_numpy(premixed_seeds(all_seeds).view(np.int64))  # the fused kernels' draws
        premixed_cur = premixed_all
        out_tok = torch.zeros((n_rows, max_new), dtype=torch.long, device=dev)
        out_lp = torch.zeros((n_rows, max_new), dtype=torch.float32, device=dev)
        out_ent = torch.zeros((n_rows, max_new), dtype=torch.float32, device=dev)
        n_gen = torch.zeros(n_rows, dtype=torch.long, device=dev)
        finish = torch.zeros(n_rows, dtype=torch.long, device=dev)
        stop_cut: dict[int, int] = {}
        stop_last = {s[-1] for s in params.stop if s}
        stop_last_ids = torch.tensor(
            [tok.encode(c)[0] for c in stop_last if c in tok.chars], dtype=torch.long, device=dev
        )
        rows = torch.arange(n_rows, device=dev)  # original row of each cache row
        alive = torch.ones(n_rows, dtype=torch.bool, device=dev)

        for step in range(max_new):
            nt = self._next_tokens(logits, params, seeds_cur, premixed_cur, step)
            chosen = nt.tokens
            out_tok[rows, step] = chosen
            out_lp[rows, step] = nt.logprobs
            out_ent[rows, step] = nt.entropies
            live = rows[alive]
            n_gen[live] = step + 1
            is_eos = alive & (chosen == tok.eos_id)
            finish[rows[is_eos]] = _STOP_EOS
            done = is_eos | (alive & (step + 1 >= row_limit[rows]))
            if len(stop_last_ids):
                cand = alive & ~is_eos & torch.isin(chosen, stop_last_ids)
                for r in rows[cand].tolist():
                    text = tok.decode(out_tok[r, : step + 1].tolist())
                    hits = [len(s) for s in params.stop if s and text.endswith(s)]
                    if hits:
                        stop_cut[r] = max(hits)
                        finish[r] = _STOP_STRING
                        done[rows == r] = True
            finish[rows[done & (finish[rows] == 0)]] = _LENGTH
            alive &= ~done
            n_alive = int(alive.sum())
            if n_alive == 0 or step + 1 == max_new:
                break
            if n_alive <= defer_at:
                late = set(rows[alive].tolist())
                return self._collect(out_tok, out_lp, out_ent, n_gen, finish, stop_cut), late
            if n_alive <= COMPACT_BELOW * len(rows):
                keep = alive.nonzero().squeeze(1)
                cache.select_rows(keep)
                rows, pos, chosen = rows[keep], pos[keep], chosen[keep]
                key_valid = None if key_valid is None else key_valid[keep]
                seeds_cur = all_seeds[rows.cpu().numpy()]
                premixed_cur = premixed_all[rows.cpu()]
                alive = alive[keep]
            if self._kernels is not None:
                logits = model.decode_step(chosen, pos, cache, key_valid, self._kernels, tables)
            else:
                logits = model(chosen[:, None], positions=pos[:, None], cache=cache,
                               key_valid=key_valid, last_only=True)
            pos = (pos + 1).clamp_(max=cfg.max_seq_len - 1)

        return self._collect(out_tok, out_lp, out_ent, n_gen, finish, stop_cut), set()

    def _next_tokens(self, logits: torch.Tensor, params: SamplingParams, seeds: np.ndarray,
                     premixed: torch.Tensor, step: int) -> NextTokens:
        """:func:`~rlbound.engines.sampling.sample_next`, as fused kernel calls for plain
        temperature sampling when decoding is fused (the same draw from the same uniform numbers,
        hashed from ``premixed``: the rows' :func:`~rlbound.engines.sampling.premixed_seeds`)."""
        plain = params.temperature > 0 and params.top_p >= 1.0 and not (0 < params.top_k < logits.shape[-1])
        if self._kernels is None or not plain:
            return sample_next(logits, params, seeds, step)
        uniforms = self._kernels.step_uniforms(premixed, step)
        return NextTokens(*self._kernels.sample_rows(logits.float().contiguous(), uniforms, float(params.temperature)))

    def _collect(self, out_tok, out_lp, out_ent, n_gen, finish, stop_cut) -> list[Sample]:
        tok = self.tokenizer
        toks, lps, ents = out_tok.tolist(), out_lp.tolist(), out_ent.tolist()
        samples = []
        for r, (n, code) in enumerate(zip(n_gen.tolist(), finish.tolist())):
            ids = toks[r][:n]
            if code == _STOP_STRING:
                ids = _cut_stop(ids, tok, stop_cut[r])
            m = len(ids)
            samples.append(
                Sample(
                    text=tok.decode(ids),
                    token_ids=ids,
                    finish_reason="length" if code == _LENGTH else "stop",
                    token_logprobs=lps[r][:m],
                    token_entropies=ents[r][:m],
                )
            )
        return samples

    # -- score ---------------------------------------------------------------------------------

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[TokenScores]:
        if len(prompts) != len(completions):
            raise RlboundError(f"score: {len(prompts)} prompts but {len(completions)} completions")
        pairs = []
        for p, c in zip(prompts, completions):
            pids, cids = self.tokenizer.encode(p, bos=True), self.tokenizer.encode(c)
            if len(pids) + len(cids) > self.config.max_seq_len:
                raise RlboundError(
                    f"score: prompt + completion is {len(pids) + len(cids)} tokens, beyond the "
                    f"tiny model's max_seq_len {self.config.max_seq_len}"
                )
            pairs.append((pids, cids))
        out: list[TokenScores | None] = [None] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    for i, scores in zip(idx, self._score_batch([pairs[i] for i in idx])):
                        out[i] = scores
        finally:
            self.model.train(was_training)
        return out  # type: ignore[return-value]

    def _score_batch(self, pairs) -> list[TokenScores]:
        width = max(len(p) + len(c) for p, c in pairs)
        ids = torch.full((len(pairs), width), self.tokenizer.pad_id, dtype=torch.long)
        for r, (p, c) in enumerate(pairs):
            ids[r, : len(p) + len(c)] = torch.tensor(p + c)
        ids = ids.to(self.device)
        logits = self.model(ids)
        # position j predicts token j + 1 (pad targets are scored too, then dropped)
        targets = torch.cat([ids[:, 1:], ids[:, :1]], dim=1)
        logp, ent = logprobs_and_entropies(logits, targets)
        logp, ent = logp.tolist(), ent.tolist()
        result = []
        for r, (p, c) in enumerate(pairs):
            lo, hi = len(p) - 1, len(p) + len(c) - 1
            result.append(TokenScores(list(c), logp[r][lo:hi], ent[r][lo:hi]))
        return result

    # -- info ----------------------------------------------------------------------------------

    def info(self) -> EngineInfo:
        """Engine name, the model directory as given, and details: parameter count, config,
        and a digest of the weights file (so a run records exactly which weights it sampled)."""
        details = {
            "parameters": self.model.num_parameters(),
            "config": self.config.to_dict(),
            "tokenizer": "char",
            "batch_size": self.batch_size,
            "device": str(self.device),
            "dtype": dtype_name(self.dtype),
            "decode": self.decode,
        }
        if self._kernels is not None:  # samples differ by float rounding between the two now and then
            details["decode_kernels"] = "whole layers" if self.model.fits_layer_kernel(self._kernels) else "per layer"
        if self._weights_digest is None:
            weights = Path(self.model_dir) / WEIGHTS_FILE
            if weights.is_file():
                self._weights_digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
        if self._weights_digest is not None:
            details["weights_sha256"] = self._weights_digest
        return EngineInfo("tiny", self.model_dir, details)
