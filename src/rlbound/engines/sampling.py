"""Next-token selection shared by the engines that decode in torch (tiny, Hugging Face).

One function, :func:`sample_next`, turns a batch of next-token logits into chosen tokens with
temperature, top-k and top-p, and reports for each chosen token its log-probability and the
full-vocabulary entropy under the *untempered* model distribution (the quantities the boundary
analyses use: perplexity, token entropy).

Randomness is per row and counter-based: row ``b`` at decoding step ``t`` draws one uniform number
from a hash of ``(seeds[b], t)`` and picks the token by inverse CDF. A sample therefore depends only
on its own seed, never on its batch neighbours or on how many samples were drawn before (up to
floating-point differences between batch shapes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlbound.engines.base import SamplingParams

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def premixed_seeds(seeds: np.ndarray) -> np.ndarray:
    """The step-independent half of :func:`row_uniforms`' hash (one splitmix64 of each seed), for
    a decoding loop that draws every step from the same seeds (the fused kernels' step_uniforms
    finishes the hash, bit for bit)."""
    return _splitmix64(seeds.astype(np.uint64))


def row_uniforms(seeds: np.ndarray, step: int) -> np.ndarray:
    """One uniform number in [0, 1) per seed for decoding step ``step`` (deterministic):
    splitmix64(splitmix64(seed) xor step * golden) >> 11, over 2^53."""
    with np.errstate(over="ignore"):
        mixed = premixed_seeds(seeds) ^ (np.uint64(step) * _GOLDEN)
    bits = _splitmix64(mixed) >> np.uint64(11)
    return bits.astype(np.float64) * (1.0 / (1 << 53))


@dataclass
class NextTokens:
    """The chosen token per row, its untempered log-probability, and the row's entropy (nats)."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    entropies: torch.Tensor


def filtered_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Sampling probabilities after temperature, top-k and top-p (rows sum to 1)."""
    scaled = logits / params.temperature
    if params.top_k and params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        drop_sorted = mass_before >= params.top_p  # keep the smallest prefix reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def logprobs_and_entropies(
    logits: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Untempered log-probability of ``tokens`` and full-vocabulary entropy (nats) per position.

    ``logits`` has shape ``[..., vocab]`` and ``tokens`` the leading shape ``[...]``. Used for
    sampled tokens (:func:`sample_next`) and for scoring given text, so both agree exactly.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropies = -(logp.exp() * logp).nan_to_num().sum(dim=-1)
    chosen = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return chosen, entropies


def sample_next(
    logits: torch.Tensor, params: SamplingParams, seeds: np.ndarray, step: int
) -> NextTokens:
    """Choose one token per row of ``logits`` (shape ``[batch, vocab]``)."""
    logits = logits.float()
    if params.temperature == 0:
        tokens = torch.argmax(logits, dim=-1)
    else:
        cdf = torch.cumsum(filtered_probs(logits, params).double(), dim=-1)
        u = torch.from_numpy(row_uniforms(seeds, step)).to(cdf.device).unsqueeze(-1) * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, u, right=True).squeeze(-1)
        tokens = tokens.clamp_(max=logits.shape[-1] - 1)
    chosen_logp, entropies = logprobs_and_entropies(logits, tokens)
    return NextTokens(tokens=tokens, logprobs=chosen_logp, entropies=entropies)
