"""``rlbound distill``: supervised fine-tuning of a student on a teacher's verified-correct samples.

:func:`distill_run` reads one or more stored runs of a teacher (from ``rlbound sample`` or
``rlbound import``) and fine-tunes a student on them:

1. **examples** (:func:`correct_examples`): the samples the run's verifier judged correct (its
   current verdicts, after any ``rlbound reverify``) that ended on their own (finish reason
   "stop", or unknown for imported samples; a cut-off sample would teach the student not to stop),
   at most ``max_per_problem`` per problem in sample order, optionally only distinct texts;
2. **prompts**: each problem's question rendered with the run's template exactly as the sampler
   rendered it (the task rebuilt from run.json, :func:`rlbound.scoring.task_from_run`); a ``chat``
   template is rendered in the *student's* chat format, the one it will be sampled with;
3. **training**: the one SFT loop (:func:`rlbound.train.sft.fit_sft`): the student's prompt ids
   (with BOS, as its engine feeds them) followed by the completion's ids and EOS, loss on the
   completion tokens and EOS only. Tiny students (``engine="tiny"``) and Hugging Face causal LMs
   (``engine="hf"``, loaded in float32 through the policy of :mod:`rlbound.train.policy`).

The output directory::

    OUT/distill.json     the settings (teacher runs and their examples' sha256, student, knobs),
                         then the outcome (final loss, wall time)
    OUT/checkpoint/      while training: policy/ and state.pt every ``checkpoint_every`` steps
    OUT/model/           the distilled model: `rlbound sample --model OUT/model`, `rlbound train
                         --model OUT/model` (with the same --engine)
    OUT/metrics.jsonl    the loss and learning rate of every step

Rerunning the same command resumes from the checkpoint, and once the model is written does
nothing. Other settings in the same OUT are refused (naming the differing field), so is a teacher
run whose correct samples changed since (topped up or re-graded), and so is an OUT that holds
anything else.

What it does not do: no sequence packing, no LoRA or other adapters, no multi-GPU training
(use TRL's SFTTrainer for large students), no weighting by the teacher's log-probabilities.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from rlbound.atomic import atomic_write_text
from rlbound.errors import RlboundError
from rlbound.progress import note

__all__ = ["DistillResult", "correct_examples", "default_settings", "distill_run", "teacher_examples"]

SETTINGS_FILE = "distill.json"
FORMAT = 1
MIN_LR_RATIO = 0.1  # the cosine schedule ends at this share of the peak learning rate
DEFAULTS = {  # per student engine: (lr, batch size); the tiny ones are the lab's distillation knobs
    "tiny": (3e-4, 64),
    "hf": (1e-5, 8),
}


def default_settings(engine: str) -> tuple[float, int]:
    """The learning rate and batch size ``rlbound distill`` uses for a student engine."""
    if engine not in DEFAULTS:
        raise RlboundError(f"distill: engine {engine!r} cannot be trained here; use tiny or hf")
    return DEFAULTS[engine]


def correct_examples(rows: Iterable[dict[str, Any]], prompts: dict[str, str],
                     max_per_problem: int | None = None, unique: bool = False) -> list[tuple[str, str]]:
    """(prompt, completion) pairs of the correct rows that ended on their own, in row order.

    ``rows`` are sample rows (``problem_id``, ``completion``, ``correct``, ``finish_reason``);
    ``prompts`` maps a problem id to its rendered prompt. ``max_per_problem`` keeps the first that
    many per problem; ``unique`` drops a completion already kept for the same problem.
    """
    kept: dict[str, list[str]] = {}
    pairs = []
    for row in rows:
        if not row.get("correct") or row.get("finish_reason") == "length":
            continue
        pid, text = row["problem_id"], row.get("completion") or ""
        have = kept.setdefault(pid, [])
        if (max_per_problem is not None and len(have) >= max_per_problem) or (unique and text in have):
            continue
        have.append(text)
        pairs.append((prompts[pid], text))
    return pairs


def teacher_examples(run: str | Path, render: Callable[[Any, str], str], max_per_problem: int | None = None,
                     unique: bool = False) -> tuple[list[tuple[str, str]], int, dict[str, Any]]:
    """The examples of one teacher run: (pairs, samples offered, what distill.json records).

    ``render(template, question)`` renders a question with a :class:`PromptTemplate`. Rows are
    taken in (problem id, sample index) order.
    """
    from rlbound.scoring import task_from_run
    from rlbound.store import load_run
    from rlbound.tasks.templates import get_template

    loaded = load_run(run)
    cfg = loaded.meta.get("config") or {}
    task = task_from_run(loaded.meta, run)
    template = get_template(cfg.get("template") or task.template)
    table = loaded.table.sort_by([("problem_id", "ascending"), ("sample_idx", "ascending")])
    rows = table.select(["problem_id", "completion", "correct", "finish_reason"]).to_pylist()
    ids = {p.id for p in task.problems}
    stray = next((r["problem_id"] for r in rows if r["problem_id"] not in ids), None)
    if stray is not None:
        raise RlboundError(f"teacher run '{run}': sample of problem {stray!r}, which its task {task.name!r} lacks")
    wanted = {r["problem_id"] for r in rows if r["correct"]}
    if any(getattr(p, "images", ()) for p in task.problems if p.id in wanted):
        raise RlboundError(f"teacher run '{run}': its problems have images, and distill trains on text prompts "
                           "only (the student would learn answers without seeing the image)")
    prompts = {p.id: render(template, p.prompt) for p in task.problems if p.id in wanted}
    pairs = correct_examples(rows, prompts, max_per_problem, unique)
    record = {"run": str(Path(run).resolve()), "label": loaded.label, "task": task.name,
              "template": template.name, "model": cfg.get("model"), "engine": cfg.get("engine"),
              "samples": len(rows), "examples": len(pairs)}
    return pairs, len(rows), record


def _digest(pairs: Sequence[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for prompt, completion in pairs:
        digest.update(json.dumps([prompt, completion]).encode())
    return digest.hexdigest()


@dataclass
class DistillResult:
    """What :func:`distill_run` did."""

    out: Path
    model_dir: Path
    examples: int
    steps: int
    final_loss: float
    skipped_long: int = 0
    resumed_at: int = 0
    """The step a checkpoint resumed from (0: trained from the start)."""
    already_done: bool = False
    """The model was already there with these settings: nothing was trained."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_out(out: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The stored distill.json if OUT already holds this distillation; refuse anything else."""
    from rlbound.store import config_difference

    if out.exists() and not out.is_dir():
        raise RlboundError(f"distill: '{out}' exists and is not a directory")
    file = out / SETTINGS_FILE
    if not file.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise RlboundError(f"distill: '{out}' is not empty and holds no {SETTINGS_FILE}; "
                               "choose a new --out directory")
        return None
    try:
        stored = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise RlboundError(f"distill: '{file}' is not valid JSON ({exc.msg})") from None
    diff = config_difference(stored.get("settings") or {}, settings)
    if diff:
        hint = (" (the teacher run's correct samples changed since: it was topped up or re-graded)"
                if "examples_sha256" in diff else "")
        raise RlboundError(f"distill: '{out}' holds a distillation with other settings ({diff}){hint}; "
                           "use another --out directory or the same settings")
    return stored


def distill_run(
    teacher_runs: str | Path | Sequence[str | Path],
    student: str | Path,
    out: str | Path,
    *,
    engine: str = "tiny",
    steps: int | None = None,
    epochs: float | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    warmup: int | None = None,
    max_per_problem: int | None = None,
    unique: bool = False,
    seed: int = 0,
    device: str = "cpu",
    checkpoint_every: int = 50,
    stop_at: int | None = None,
) -> DistillResult:
    """Fine-tune ``student`` on the verified-correct samples of ``teacher_runs``; write ``OUT/model``.

    ``steps`` optimiser steps, or ``epochs`` passes over the examples (default 2 epochs);
    ``lr`` / ``batch_size`` default per engine (:data:`DEFAULTS`), ``warmup`` to a tenth of the
    steps. ``stop_at`` stops after that many steps with a checkpoint, as an interruption would
    (the next call resumes). See the module docstring for the layout and the resume contract.
    """
    import torch

    from rlbound.store import package_versions
    from rlbound.train.policy import load_policy
    from rlbound.train.sft import fit_sft, lr_at, sft_rows, tail_mean_loss

    runs = [teacher_runs] if isinstance(teacher_runs, (str, Path)) else list(teacher_runs)
    if not runs:
        raise RlboundError("distill: give at least one teacher run (--run)")
    default_lr, default_batch = default_settings(engine)
    lr = default_lr if lr is None else lr
    batch_size = default_batch if batch_size is None else batch_size
    if steps is not None and epochs is not None:
        raise RlboundError("distill: give --steps or --epochs, not both")
    if (steps is not None and steps < 1) or (epochs is not None and not epochs > 0) or batch_size < 1 \
            or not lr > 0 or (max_per_problem is not None and max_per_problem < 1) or checkpoint_every < 0:
        raise RlboundError("distill: --steps, --batch-size and --max-per-problem must be >= 1, "
                           "--epochs and --lr > 0")
    out = Path(out)
    checkpoint = out / "checkpoint"
    # The student is loaded first: the prompts are rendered in its chat format, when chat.
    resume_state = None
    if (checkpoint / "state.pt").is_file():
        resume_state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=False)
    policy = load_policy(checkpoint / "policy" if resume_state else student, engine, device=device)
    student_engine = policy.engine()

    def render(template: Any, question: str) -> str:
        try:
            return template.render(question, student_engine)
        except RlboundError:
            raise RlboundError(f"distill: the teacher run was sampled with the {template.name!r} template, which "
                               f"needs the student's chat template, and student '{student}' has none") from None

    pairs, teachers = [], []
    for run in runs:
        found, offered, record = teacher_examples(run, render, max_per_problem, unique)
        if not found:
            raise RlboundError(f"distill: teacher run '{run}' has no verified-correct samples that ended on "
                               f"their own (of {offered}); nothing to learn from")
        pairs += found
        teachers.append(record)

    limit = _context_limit(policy)
    seqs, starts, skipped = [], [], 0
    for prompt, completion in pairs:
        p = policy.encode_prompt(prompt)
        ids = p + policy.encode_completion(completion)
        if limit is not None and len(ids) > limit:
            skipped += 1
            continue
        seqs.append(ids)
        starts.append(len(p))
    if not seqs:
        raise RlboundError(f"distill: every example is longer than the student's context ({limit} tokens)")
    if epochs is None and steps is None:
        epochs = 2.0
    total = steps if steps is not None else max(1, math.ceil(epochs * len(seqs) / batch_size))
    warmup = max(1, total // 10) if warmup is None else warmup
    settings = {
        "teachers": [{"run": t["run"], "examples": t["examples"]} for t in teachers],
        "examples_sha256": _digest(pairs),
        "student": {"model": str(Path(student).resolve()) if Path(student).exists() else str(student),
                    "engine": engine},
        "steps": total, "batch_size": batch_size, "lr": lr, "warmup": warmup,
        "max_per_problem": max_per_problem, "unique": unique, "seed": seed,
    }
    stored = _check_out(out, settings)
    model_dir = out / "model"
    if stored is not None and stored.get("status") == "done" and model_dir.is_dir():
        note(f"distill: '{model_dir}' is already distilled with these settings; nothing to do")
        return DistillResult(out, model_dir, len(seqs), total, float(stored.get("final_loss", math.nan)),
                             skipped, already_done=True)
    record = {"format": FORMAT, "settings": settings, "teachers": teachers, "status": "training",
              "created": (stored or {}).get("created", _now()), "epochs": epochs, "examples": len(seqs),
              "skipped_too_long": skipped, "versions": package_versions()}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SETTINGS_FILE, json.dumps(record, indent=2) + "\n")

    torch.manual_seed(seed)
    earlier = list(resume_state.get("history", [])) if resume_state else []
    device_of = next(policy.model.parameters()).device

    def save_checkpoint(state: dict[str, Any]) -> None:
        fresh = out / "checkpoint.new"
        shutil.rmtree(fresh, ignore_errors=True)
        policy.save(fresh / "policy", {"distill_step": state["step"]})
        torch.save({**state, "history": earlier + state["losses"]}, fresh / "state.pt")
        shutil.rmtree(checkpoint, ignore_errors=True)
        fresh.rename(checkpoint)

    t0 = time.perf_counter()
    fit = fit_sft(
        policy.model, lambda x: policy.logits(x.to(device_of), None), sft_rows(seqs, starts, policy.pad_id),
        total, batch_size, lr, warmup, min_lr_ratio=MIN_LR_RATIO, seed=seed, state=resume_state, stop_at=stop_at,
        description="distilling", checkpoint=save_checkpoint, checkpoint_every=checkpoint_every,
    )
    losses = earlier + fit.losses
    resumed_at = int(resume_state["step"]) if resume_state else 0
    if fit.steps < total:  # stopped early: keep a checkpoint to resume from
        save_checkpoint(fit.state)
        return DistillResult(out, checkpoint / "policy", len(seqs), fit.steps, tail_mean_loss(losses), skipped,
                             resumed_at)
    metrics = "".join(json.dumps({"step": i, "loss": loss, "lr": lr * lr_at(i, total, warmup, MIN_LR_RATIO)}) + "\n"
                      for i, loss in enumerate(losses))
    atomic_write_text(out / "metrics.jsonl", metrics)
    final_loss = tail_mean_loss(losses)
    partial = out / "model.partial"
    shutil.rmtree(partial, ignore_errors=True)
    policy.save(partial, {"distill": {"teachers": teachers, "examples": len(seqs), "steps": total,
                                      "source": str(student), "final_loss": final_loss}})
    shutil.rmtree(model_dir, ignore_errors=True)
    partial.rename(model_dir)
    shutil.rmtree(checkpoint, ignore_errors=True)
    record.update(status="done", final_loss=final_loss, train_wall_s=round(time.perf_counter() - t0, 2),
                  finished=_now())
    atomic_write_text(out / SETTINGS_FILE, json.dumps(record, indent=2) + "\n")
    return DistillResult(out, model_dir, len(seqs), total, final_loss, skipped, resumed_at)


def _context_limit(policy: Any) -> int | None:
    """The longest row the student can take: the tiny model's max_seq_len, an HF model's
    max_position_embeddings (None when it states none)."""
    config = getattr(policy.model, "config", None)
    for name in ("max_seq_len", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
