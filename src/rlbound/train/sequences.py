"""Model inputs for the two conditionings, and per-token log-probs / entropies aligned with them.

* ``"prompt"`` (``log P(y|x)``): each row is ``BOS + prompt + response``.
* ``"response_only"`` (PreRL's ``log P(y)``): each row is ``BOS + response``, a fresh sequence,
  so positions restart at 0 right after BOS and the prompt is invisible.

Rows are right-padded with ``pad_id`` and start at column 0, so a causal decoder needs neither
positions nor an attention mask: every real token sees only real tokens before it (pads come
after), and pad outputs are never read. :func:`policy_inputs` therefore returns ``positions``
as None (meaning "0, 1, 2, ... in every row").

Off-by-one convention: ``response_mask[b, t]`` is True when column ``t``'s logits score a
response token, i.e. ``input_ids[b, t + 1]`` is a response token. The per-token tensors of
:mod:`rlbound.train.algorithms` (log-probs, advantages, values, KL) all live on this mask. With
``n_p`` prompt tokens and ``n_r`` response tokens, the mask is True at columns
``n_p .. n_p + n_r - 1`` for ``"prompt"`` and ``0 .. n_r - 1`` for ``"response_only"``; the
last column of the batch is never masked.

EOS: pass each sample's generated token ids as the response, *including* the EOS token when the
sample stopped at EOS (the engines report it as the last token id). It is then scored and
trained like any response token, so the policy learns when to stop. ``TinyEngine.score`` scores
completion *text* and so has no EOS entry: its log-probs equal the first ``n_r - 1`` masked
entries of such a row (all ``n_r`` when the response has no EOS).

What this module does not do: no left padding, no packing, no truncation (the caller keeps rows
within the model's context), no chat templates; ``bos_id`` must be a real token for
``"response_only"`` (for a model without BOS, pass the token its pretraining put between
documents).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from rlbound.errors import RlboundError


class PolicyInputs(NamedTuple):
    input_ids: torch.Tensor
    """``[B, L]`` long, right-padded with ``pad_id``."""
    response_mask: torch.Tensor
    """``[B, L]`` bool; see the module docstring for the off-by-one convention."""
    positions: torch.Tensor | None
    """Always None: default positions ``0 .. L-1`` are right for both conditionings."""


def policy_inputs(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]],
                  conditioning: str, bos_id: int | None, pad_id: int) -> PolicyInputs:
    """Rows ``BOS + prompt + response`` (``"prompt"``) or ``BOS + response``
    (``"response_only"``). ``prompt_ids`` exclude BOS; ``bos_id=None`` is allowed only with
    ``"prompt"`` (the row is then ``prompt + response`` and every prompt must be non-empty)."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    if conditioning not in ("prompt", "response_only"):
        raise RlboundError(f"conditioning must be 'prompt' or 'response_only', "
                           f"got {conditioning!r}")
    head = [] if bos_id is None else [int(bos_id)]
    rows, starts = [], []
    for p, r in zip(prompt_ids, response_ids):
        if conditioning == "response_only":
            if bos_id is None:
                raise RlboundError("response_only conditioning (PreRL) needs a BOS token")
            context = head
        else:
            context = head + [int(t) for t in p]
            if not context:
                raise RlboundError("a row needs at least one token before the response "
                                   "(a BOS token or a non-empty prompt)")
        rows.append(context + [int(t) for t in r])
        starts.append(len(context))
    width = max((len(row) for row in rows), default=1)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, (row, start) in enumerate(zip(rows, starts)):
        ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, start - 1 : len(row) - 1] = True  # logits at t score token t + 1
    return PolicyInputs(ids, mask, None)


def _next_tokens(input_ids: torch.Tensor) -> torch.Tensor:
    """``input_ids`` shifted left by one (the last column gets a dummy 0, never masked)."""
    return torch.cat([input_ids[:, 1:], torch.zeros_like(input_ids[:, :1])], dim=1)


def gather_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor,
                    temperature: float = 1.0) -> torch.Tensor:
    """``[B, L]`` log-probs of the next token at each masked column (0 elsewhere), in float32.

    ``temperature``: divide the logits first. Use the sampling temperature for the old and
    current log-probs of the importance ratio (the samples came from the tempered policy);
    the engines' reported log-probs are untempered (temperature 1).
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = _next_tokens(input_ids)
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    return -nll.view(targets.shape) * response_mask.to(logits.dtype)


def token_entropy(logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
                  ) -> torch.Tensor:
    """``[B, L]`` full-vocabulary entropy (nats) of the next-token distribution at each masked
    column (0 elsewhere), differentiable (for an entropy bonus)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1)
    ent = -(logp.exp() * logp).sum(dim=-1)
    return ent * mask.to(ent.dtype)
