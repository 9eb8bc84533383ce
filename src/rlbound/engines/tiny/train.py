"""Next-token training of tiny models, and the arithmetic lab model.

* :func:`train_next_token` fits a tiny model (fresh, in memory, or from a model directory) on
  texts or (prompt, completion) pairs with AdamW, linear warm-up then cosine decay, gradient
  clipping and a progress bar showing the loss (the loop is :func:`rlbound.train.sft.fit_sft`,
  shared with ``rlbound distill``); it can save the result (and the optimizer state, for
  ``resume=True``).
* :func:`fit_arithmetic_model` builds the built-in arithmetic task's solution traces
  (prompt = the ``plain`` template, completion = the trace + EOS), fits a small model on problems
  drawn far from the evaluation indices, saves it, and measures held-out accuracy.

What it does not do: no policy-gradient RL (that is the trainer's job), no mixed precision, no
data-parallel training, no packing of several examples into one row (rows are right-padded).
Runs are deterministic given ``seed`` on a fixed machine and thread count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import torch

from rlbound.engines.tiny.checkpoint import (
    load_model,
    load_training_state,
    save_model,
    save_training_state,
)
from rlbound.engines.tiny.model import TinyConfig, TinyLlama
from rlbound.engines.tiny.tokenizer import CharTokenizer
from rlbound.errors import RlboundError
from rlbound.engines.precision import dtype_name, resolve_dtype
from rlbound.train.sft import IGNORE, fit_sft, lr_at, sft_rows, tail_mean_loss

__all__ = ["IGNORE", "TrainResult", "encode_examples", "fit_arithmetic_model", "lr_at", "train_next_token"]

Example = Union[str, tuple[str, str]]

ARITH_TRAIN_OFFSET = 1_000_000
"""Training problems of :func:`fit_arithmetic_model` start at this index; evaluation uses the
task's default indices ``0 ..`` (``arithmetic_task(offset=0)``)."""
ARITH_HELDOUT_GUARD = 10_000
"""Training problems whose prompt equals one of the first this-many evaluation prompts are
dropped (where the problem space allows it)."""


@dataclass
class TrainResult:
    """What :func:`train_next_token` returns."""

    model: TinyLlama
    tokenizer: CharTokenizer
    losses: list[float] = field(default_factory=list)
    """Mean loss per optimisation step (over the completion tokens of the batch)."""
    steps: int = 0
    wall_s: float = 0.0
    step_s: list[float] = field(default_factory=list)
    """Wall seconds per step (:attr:`rlbound.train.sft.SFTFit.step_s`)."""
    model_dir: str | None = None

    @property
    def final_loss(self) -> float:
        return tail_mean_loss(self.losses)


def encode_examples(
    examples: Sequence[Example], tokenizer: CharTokenizer, max_seq_len: int, add_eos: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``ids [N, L]``, ``targets [N, L]`` (IGNORE where no loss) and ``lengths [N]``.

    A text is ``<bos> text <eos>`` with loss on every token after BOS; a (prompt, completion)
    pair is ``<bos> prompt completion <eos>`` with loss on the completion tokens (and EOS) only.
    """
    if not examples:
        raise RlboundError("training needs at least one example")
    seqs, starts = [], []
    for n, ex in enumerate(examples):
        if isinstance(ex, str):
            ids, start = tokenizer.encode(ex, bos=True, eos=add_eos), 1
        else:
            prompt, completion = ex
            p = tokenizer.encode(prompt, bos=True)
            ids, start = p + tokenizer.encode(completion, eos=add_eos), len(p)
        if len(ids) > max_seq_len:
            raise RlboundError(
                f"training example {n} is {len(ids)} tokens, beyond max_seq_len {max_seq_len}"
            )
        seqs.append(ids)
        starts.append(start)
    return sft_rows(seqs, starts, tokenizer.pad_id)


def train_next_token(
    model: str | Path | TinyLlama | TinyConfig,
    examples: Sequence[Example],
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup: int = 50,
    *,
    weight_decay: float = 0.1,
    grad_clip: float = 1.0,
    min_lr_ratio: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    seed: int = 0,
    tokenizer: CharTokenizer | None = None,
    out_dir: str | Path | None = None,
    save_state: bool = False,
    resume: bool = False,
    add_eos: bool = True,
    stop_at: int | None = None,
    description: str = "training",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    dtype: str = "float32",
    compile: bool = False,
) -> TrainResult:
    """Fit ``model`` on ``examples`` by next-token prediction; return it with its loss curve.

    ``model`` is a model directory, a :class:`TinyLlama` (trained in place) or a
    :class:`TinyConfig` (a fresh model initialised from ``seed``). ``examples`` are texts or
    (prompt, completion) pairs (see :func:`encode_examples`). ``steps`` is the total number of
    optimisation steps; with ``resume=True`` and a ``training_state.pt`` in the model directory,
    training continues from the stored step with the stored optimizer state, so a run split by
    ``stop_at`` (stop after that many steps; the schedule still spans ``steps``) and resumed
    equals the uninterrupted run. When ``out_dir`` is given the model is saved there (with the
    training state if ``save_state``).

    ``checkpoint_dir`` with ``checkpoint_every > 0`` saves the model and training state there
    every that many steps (replacing the previous checkpoint whole, never half-written); if the
    directory already holds a checkpoint, training resumes from it instead of starting over, so a
    killed run loses at most ``checkpoint_every`` steps.

    ``dtype``: the format of the matrix products (``auto``: bfloat16 where the CPU computes it
    natively, see :mod:`rlbound.engines.precision`); weights and optimizer state stay float32.
    ``compile``: the forward pass compiled by ``torch.compile`` (:func:`rlbound.train.sft.compiled`).
    """
    compute_dtype = resolve_dtype(dtype, "cpu", what="training dtype")
    if steps < 1 or batch_size < 1:
        raise RlboundError(
            f"training needs steps >= 1 and batch_size >= 1 (got {steps}, {batch_size})"
        )
    torch.manual_seed(seed)
    state = None
    label = None
    if isinstance(model, (str, Path)):
        label = str(model)
        model, tokenizer = load_model(model)
        state = load_training_state(label) if resume else None
    elif isinstance(model, TinyConfig):
        model = TinyLlama(model)
    checkpoint_state = load_training_state(checkpoint_dir) if checkpoint_dir is not None else None
    if checkpoint_state is not None:
        model, tokenizer = load_model(checkpoint_dir)
        state = checkpoint_state
    tokenizer = tokenizer or CharTokenizer()
    if tokenizer.vocab_size != model.config.vocab_size:
        raise RlboundError(
            f"tokenizer has {tokenizer.vocab_size} tokens, model {model.config.vocab_size}"
        )

    rows = encode_examples(examples, tokenizer, model.config.max_seq_len, add_eos)
    fit = fit_sft(
        model, model, rows, steps, batch_size, lr, warmup, weight_decay=weight_decay,
        grad_clip=grad_clip, min_lr_ratio=min_lr_ratio, betas=betas, seed=seed, state=state,
        stop_at=stop_at, description=description, checkpoint_every=checkpoint_every,
        checkpoint=(lambda st: _save_checkpoint(checkpoint_dir, model, tokenizer, st))
        if checkpoint_dir is not None else None, compute_dtype=compute_dtype, compile_forward=compile,
    )
    result = TrainResult(model, tokenizer, losses=fit.losses, steps=fit.steps, wall_s=fit.wall_s,
                         step_s=fit.step_s, model_dir=label)
    if out_dir is not None:
        meta = {"trained_steps": fit.steps, "schedule_steps": steps, "batch_size": batch_size,
                "lr": lr, "warmup": warmup, "seed": seed, "final_loss": result.final_loss,
                "dtype": dtype_name(compute_dtype), "compiled": compile}
        save_model(model, tokenizer, out_dir, extra={"training": meta})
        if save_state:
            save_training_state(out_dir, fit.state)
        result.model_dir = str(out_dir)
    return result


def _save_checkpoint(checkpoint_dir: str | Path, model: TinyLlama, tokenizer: CharTokenizer,
                     state: dict) -> None:
    """Write a checkpoint beside ``checkpoint_dir``, then swap it in by renaming."""
    import shutil

    final = Path(checkpoint_dir)
    fresh, old = final.with_name(final.name + ".new"), final.with_name(final.name + ".old")
    shutil.rmtree(fresh, ignore_errors=True)
    save_model(model, tokenizer, fresh, extra={"checkpoint_step": state["step"]})
    save_training_state(fresh, state)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    fresh.rename(final)
    shutil.rmtree(old, ignore_errors=True)


# -- the arithmetic lab model ------------------------------------------------------------------


@dataclass
class FitResult:
    """What :func:`fit_arithmetic_model` returns: where the model is, and how well it does."""

    model_dir: str
    train: TrainResult
    accuracy: dict[str, float]
    """Held-out pass@1 by decoding mode: ``"greedy"`` and ``"temperature_1"``."""
    wall_s: float
    """Training wall time in seconds (evaluation excluded)."""


def arithmetic_examples(difficulty: int, n: int, seed: int, offset: int = ARITH_TRAIN_OFFSET,
                        exclude_prompts: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """``n`` (prompt, completion) pairs of the arithmetic task, from index ``offset`` on.

    The prompt is the ``plain`` template on the problem; the completion is its solution trace
    (EOS is appended at encoding). Problems whose question is in ``exclude_prompts`` are skipped
    while that is possible: low difficulties have only a few hundred distinct problems, so if
    ``n`` others cannot be found among ``4 n + 10000`` candidates the excluded ones are used too
    (see :func:`heldout_is_disjoint`).
    """
    from rlbound.tasks.synthetic import arithmetic_problem
    from rlbound.tasks.templates import get_template

    template = get_template("plain")
    kept, skipped = [], []
    for index in range(offset, offset + 4 * n + 10_000):
        problem = arithmetic_problem(seed, difficulty, index)
        pair = (template.render(problem.prompt), problem.metadata["solution"])
        (skipped if problem.prompt in exclude_prompts else kept).append(pair)
        if len(kept) == n:
            return kept
    return (kept + skipped * (n // max(1, len(skipped)) + 1))[:n] if skipped else kept


def heldout_is_disjoint(
    examples: Sequence[tuple[str, str]], exclude_prompts: frozenset[str]
) -> bool:
    """Whether no example's question is one of ``exclude_prompts``."""
    from rlbound.tasks.templates import get_template

    prefix, suffix = get_template("plain").text.split("{question}")
    return not any(p[len(prefix): len(p) - len(suffix)] in exclude_prompts for p, _ in examples)


def arithmetic_accuracy(
    engine, problems, temperature: float, n_samples: int = 1, seed: int = 0
) -> float:
    """Mean correctness (pass@1) of ``engine`` on ``problems`` over ``n_samples`` samples each."""
    from rlbound.engines.base import SamplingParams, sample_seed
    from rlbound.tasks.templates import get_template
    from rlbound.verify import verify_batch

    template = get_template("plain")
    params = SamplingParams(temperature=temperature, max_tokens=200)
    n_samples = 1 if temperature == 0 else n_samples
    prompts = [template.render(p.prompt) for p in problems]
    seeds = [[sample_seed(seed, p.id, j) for j in range(n_samples)] for p in problems]
    outputs = engine.generate(prompts, params, seeds)
    references = [p.reference for p, samples in zip(problems, outputs) for _ in samples]
    verdicts = verify_batch("exact", references, [s.text for samples in outputs for s in samples])
    return sum(v.correct for v in verdicts) / len(verdicts)


DEFAULT_ARITH_CONFIG = TinyConfig(d_model=128, n_layers=4, n_heads=4, d_ff=384, max_seq_len=256)


def fit_arithmetic_model(
    out_dir: str | Path,
    difficulty: int = 3,
    n_train: int = 30_000,
    steps: int = 450,
    seed: int = 0,
    *,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup: int = 50,
    config: TinyConfig | None = None,
    eval_n: int = 200,
    eval_samples: int = 4,
) -> FitResult:
    """Train and save the arithmetic lab model; return it with held-out accuracy.

    Training problems are indices ``ARITH_TRAIN_OFFSET ..`` of seed ``seed`` minus any whose
    question appears among the first ``ARITH_HELDOUT_GUARD`` evaluation problems (at difficulty
    1-2 the problem space is too small for that, and ``meta.training.heldout_disjoint`` in the
    saved config says so); accuracy is
    measured on ``arithmetic_task(n=eval_n, seed=seed, difficulty=difficulty)`` (offset 0),
    greedy and at temperature 1 (``eval_samples`` samples per problem). ``eval_n=0`` skips it.

    The defaults (difficulty 3, 450 steps of 64 examples, the 0.9M-parameter
    ``DEFAULT_ARITH_CONFIG``) train in about two minutes on two otherwise idle CPU cores; seed 0
    reaches 56% greedy / 39% temperature-1 accuracy on 200 held-out problems. Accuracy is still
    climbing steeply there, so it varies with the seed and data (35-55% greedy seen) and with
    ``steps``. On a busy machine use one torch thread (see the engine module's note).
    """
    from rlbound.engines.tiny.engine import TinyEngine
    from rlbound.tasks.synthetic import arithmetic_problem, arithmetic_task

    guard = frozenset(
        arithmetic_problem(seed, difficulty, i).prompt for i in range(ARITH_HELDOUT_GUARD)
    )
    examples = arithmetic_examples(difficulty, n_train, seed, exclude_prompts=guard)
    disjoint = heldout_is_disjoint(examples, guard)
    config = config or DEFAULT_ARITH_CONFIG
    t0 = time.perf_counter()
    train = train_next_token(
        config, examples, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, seed=seed,
        description=f"fitting arithmetic d{difficulty}",
    )
    wall = time.perf_counter() - t0
    accuracy: dict[str, float] = {}
    if eval_n > 0:
        engine = TinyEngine.from_model(train.model, train.tokenizer)
        problems = arithmetic_task(n=eval_n, seed=seed, difficulty=difficulty).problems
        accuracy["greedy"] = arithmetic_accuracy(engine, problems, 0.0)
        accuracy["temperature_1"] = arithmetic_accuracy(engine, problems, 1.0, eval_samples, seed)
    meta = {
        "task": "arithmetic", "difficulty": difficulty, "n_train": n_train, "steps": steps,
        "seed": seed, "batch_size": batch_size, "lr": lr, "train_offset": ARITH_TRAIN_OFFSET,
        "final_loss": train.final_loss, "train_wall_s": round(wall, 1),
        "torch_threads": torch.get_num_threads(),
        "heldout_accuracy": accuracy, "heldout": {"n": eval_n, "offset": 0, "seed": seed},
        "heldout_disjoint": disjoint,
    }
    save_model(train.model, train.tokenizer, out_dir, extra={"training": meta})
    train.model_dir = str(out_dir)
    return FitResult(str(out_dir), train, accuracy, wall)
