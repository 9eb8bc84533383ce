"""Supervised fine-tuning by next-token prediction: the one SFT loop, for tiny and HF models.

* :func:`sft_rows` pads token sequences into right-padded ``ids``, ``targets`` (:data:`IGNORE`
  where no loss is taken) and ``lengths``; the loss starts at a given position per sequence, so a
  (prompt, completion) pair learns its completion tokens only.
* :func:`fit_sft` fits a model on such rows: AdamW (weight decay on matrices only), linear
  warm-up then cosine decay (:func:`lr_at`), gradient clipping, a seeded shuffle where each epoch
  sees every row once, a progress bar with the loss, and an optional checkpoint callback. Its
  training state (optimizer, shuffle order, generator, step) can be handed back to continue
  exactly where it stopped. With ``compile_forward`` the forward pass is compiled by
  ``torch.compile`` (:func:`compiled`).

The model is anything with ``parameters()``, ``train()`` and ``eval()``; ``forward(ids)`` returns
its logits ``[B, L, V]``. Rows start at column 0 and are right-padded, so a causal decoder needs no
attention mask: every real token sees only real tokens before it. The tiny engine's trainer
(:func:`rlbound.engines.tiny.train.train_next_token`) and ``rlbound distill``
(:mod:`rlbound.distill`, tiny or Hugging Face students) both train through here.

What it does not do: tokenise (callers do), pack several examples into one row, keep weights in
bfloat16 (``compute_dtype`` autocasts the matmuls; weights and optimizer state stay float32),
gradient accumulation or data-parallel training. Deterministic given ``seed`` on a fixed machine
and thread count.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from rlbound.engines.precision import autocast
from rlbound.errors import RlboundError
from rlbound.progress import progress

__all__ = ["IGNORE", "SFTFit", "compiled", "fit_sft", "lr_at", "sft_rows", "tail_mean_loss"]

IGNORE = -100
"""Target value of positions that take no loss (``F.cross_entropy``'s ``ignore_index``)."""


def sft_rows(seqs: Sequence[Sequence[int]], starts: Sequence[int], pad_id: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``ids [N, L]``, ``targets [N, L]`` and ``lengths [N]`` of token sequences.

    Sequence ``r`` learns its tokens ``starts[r] ..`` (position ``j`` predicts token ``j + 1``);
    every other target is :data:`IGNORE`. ``starts[r]`` must be at least 1 (the first token is
    context) and below the sequence's length.
    """
    if not seqs:
        raise RlboundError("training needs at least one example")
    for n, (s, start) in enumerate(zip(seqs, starts)):
        if start < 1 or start >= len(s):
            raise RlboundError(f"training example {n} has no tokens to learn")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    targets = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    for r, (s, start) in enumerate(zip(seqs, starts)):
        ids[r, : len(s)] = torch.tensor(list(s))
        targets[r, start - 1: len(s) - 1] = torch.tensor(list(s[start:]))
    lengths = torch.tensor([len(s) for s in seqs])
    return ids, targets, lengths


def lr_at(step: int, steps: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then cosine decay to
    ``min_ratio`` at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    progress_frac = (step - warmup) / max(1, steps - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_frac)))


def tail_mean_loss(losses: Sequence[float]) -> float:
    """The final loss of a run: the mean over its last tenth of steps (NaN with no steps)."""
    tail = list(losses)[-max(1, len(losses) // 10):]
    return float(sum(tail) / len(tail)) if tail else float("nan")


def compiled(forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``forward`` compiled by ``torch.compile`` (inductor; dynamic shapes, so batches of every
    width share one compilation). Inductor writes and builds C++ kernels on CPU: a C++ compiler
    must be installed (checked here, one-line error). The compiled forward fuses the elementwise
    work around the matmuls; on the lab's tiny models in bfloat16 it trained about 1.8x faster
    than eager after a 20-50 s compilation (bench/bench_tiny_vs_hf.py ``--train-compile``), so it
    pays for runs of a few hundred steps and more. Its rounding differs from eager's; :func:`fit_sft`
    trains it with torch's deterministic algorithms on, so that runs of one seed reproduce. Each
    call resets torch's compilation caches (dynamo) first, see below."""
    compiler = os.environ.get("CXX") or "c++"
    if shutil.which(compiler) is None and shutil.which("g++") is None:
        raise RlboundError(f"compiled training needs a C++ compiler ({compiler} or g++ on PATH) for "
                           "torch.compile: install one (e.g. apt install g++) or turn compiling off (lab: "
                           "pretrain.compile = false, teacher_pretrain.compile = false)")
    # A second compiled fit in one process (a new model, batches of another width) reused the
    # first fit's compiled backward with that width's strides baked in and failed on an inductor
    # assertion (torch 2.13: "expected size 16==16, stride 2624==1344"). Dynamo's caches are reset
    # before each compilation: each fit compiles its own graphs (inductor's on-disk cache keeps
    # this cheap); the price is that other functions compiled in this process recompile too.
    torch._dynamo.reset()
    return torch.compile(forward, dynamic=True)


@contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """torch's deterministic algorithms on, while ``enabled`` (compiled training): inductor's
    backward of the embedding otherwise adds rows with parallel atomics, in a different order each
    run, and two runs of the same seed drift apart."""
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@dataclass
class SFTFit:
    """What :func:`fit_sft` did: the loss per step it ran, where it ended, its training state."""

    losses: list[float] = field(default_factory=list)
    """Mean loss per optimisation step run by this call (over the batch's learned tokens)."""
    steps: int = 0
    """The step it stopped at (``steps``, or ``stop_at``)."""
    wall_s: float = 0.0
    step_s: list[float] = field(default_factory=list)
    """Wall seconds of each step run by this call (a compiled fit's first steps include its
    compilation: rates after the first few steps are the steady ones)."""
    state: dict[str, Any] = field(default_factory=dict)
    """``optimizer``, ``order``, ``generator``, ``step``: pass it back as ``state`` to go on
    (``losses``, this call's losses so far, rides along and is not read back)."""


def fit_sft(
    model: Any,
    forward: Callable[[torch.Tensor], torch.Tensor],
    rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    *,
    weight_decay: float = 0.1,
    grad_clip: float = 1.0,
    min_lr_ratio: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    seed: int = 0,
    state: dict[str, Any] | None = None,
    stop_at: int | None = None,
    description: str = "training",
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int = 0,
    compute_dtype: torch.dtype = torch.float32,
    compile_forward: bool = False,
) -> SFTFit:
    """Fit ``model`` on ``rows`` (from :func:`sft_rows`) for ``steps`` optimisation steps.

    ``state`` (an earlier call's :attr:`SFTFit.state`) continues from its step with its optimizer
    state and shuffle, so a run split by ``stop_at`` (stop after that many steps; the schedule
    still spans ``steps``) equals the uninterrupted one. ``checkpoint(state)`` is called every
    ``checkpoint_every`` steps (not after the last one) with the state at that step. The model is
    left in eval mode. ``compute_dtype=torch.bfloat16`` runs the forward pass under
    ``torch.autocast`` (the weights, gradients and optimizer state stay float32; the loss is
    computed in float32). ``compile_forward`` runs ``forward`` through :func:`compiled`.
    """
    if steps < 1 or batch_size < 1:
        raise RlboundError(
            f"training needs steps >= 1 and batch_size >= 1 (got {steps}, {batch_size})"
        )
    ids, targets, lengths = rows
    if compile_forward:
        forward = compiled(forward)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=lr, betas=betas,
    )
    generator = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)  # the rest of the current epoch's shuffle
    start_step = 0
    if state:
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        order = state["order"]
        start_step = int(state["step"])
    end_step = steps if stop_at is None else min(steps, stop_at)

    def training_state(step: int) -> dict[str, Any]:
        return {"optimizer": optimizer.state_dict(), "order": order,
                "generator": generator.get_state(), "step": step, "losses": list(fit.losses)}

    model.train()
    fit = SFTFit()
    t0 = last = time.perf_counter()
    ema = None
    with progress(description, total=end_step, unit="steps") as bar, _deterministic(compile_forward):
        bar.advance(start_step)
        for step in range(start_step, end_step):
            if len(order) < batch_size:  # reshuffle: each epoch sees every example once
                order = torch.cat([order, torch.randperm(len(ids), generator=generator)])
            batch, order = order[:batch_size], order[batch_size:]
            width = int(lengths[batch].max())
            x, y = ids[batch, :width], targets[batch, :width]
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_at(step, steps, warmup, min_lr_ratio)
            with autocast(x.device.type, compute_dtype):
                logits = forward(x)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1).to(logits.device),
                ignore_index=IGNORE,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            value = loss.detach().item()
            fit.losses.append(value)
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            now = time.perf_counter()
            fit.step_s.append(now - last)
            last = now
            bar.set_postfix(f"loss {ema:.4f}")
            bar.advance(1)
            if checkpoint is not None and checkpoint_every > 0 and (step + 1) % checkpoint_every == 0 \
                    and step + 1 < end_step:
                checkpoint(training_state(step + 1))
    model.eval()
    fit.steps = end_step
    fit.wall_s = time.perf_counter() - t0
    fit.state = training_state(end_step)
    return fit
