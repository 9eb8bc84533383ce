"""The one policy-gradient loop: rollout → reward → advantages → loss → update, for every algorithm.

Each step:

1. **rollout**: ``prompts_per_step`` training problems (a seeded permutation of the task,
   cycled; one problem with ``one_shot``), ``group_size`` samples each, from the policy's own
   engine over the live weights (sample seeds derive from the run seed, the step, the problem and
   the sample index, so a resumed run draws the same rollouts);
2. **reward**: the verifier's verdicts through the chosen reward function
   (:mod:`rlbound.train.rewards`), plus DAPO's overlong shaping where the algorithm asks;
   ReMax also decodes one greedy response per problem for its baseline;
3. **advantages** (:mod:`rlbound.train.algorithms`), with the algorithm's sample filter (DAPO's
   dynamic sampling drops all-correct and all-wrong groups; PSR keeps correct samples only, NSR
   wrong ones);
4. **loss and update**: the old log-probs are recomputed under the algorithm's conditioning
   (log P(y|x), or log P(y) after a bare BOS for PreRL) before the first update, then
   ``updates_per_batch`` passes of ``minibatches`` AdamW steps on the clipped surrogate, with a
   KL term to a frozen reference model and an entropy bonus when their weights are non-zero. PPO
   trains a critic (a copy of the policy with a scalar head) on the returns of GAE.

Metrics per step go to ``OUT/metrics.jsonl`` (reward, accuracy, entropy, KL (``kl``: the k3
estimate; ``kl_k1``: k1 beside it), response length,
clip fraction, kept samples, losses, wall time), with a live progress bar. A checkpoint
(``OUT/checkpoint``: weights, optimiser, critic, step) is written every ``checkpoint_every``
steps; rerunning the same command resumes from it. The trained model is saved to
``OUT/model``. DSRL re-syncs the reference model at its switch step.

What it does not do: distributed or GPU-scale training (use TRL or verl with rlbound's verifiers
as reward functions for that); packing; mixed precision.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from rlbound.engines.base import SamplingParams, sample_seed
from rlbound.errors import RlboundError
from rlbound.progress import progress
from rlbound.tasks.base import Task
from rlbound.tasks.templates import get_template
from rlbound.train.algorithms import (
    TOKEN_LEVEL_ADVANTAGES,
    algorithm_at,
    filter_keep,
    kl_estimate,
    policy_loss,
    sequence_advantages,
    shape_rewards,
    token_advantages,
    value_loss,
)
from rlbound.train.config import TrainerConfig
from rlbound.train.policy import load_policy
from rlbound.train.rewards import make_reward
from rlbound.train.sequences import gather_logprobs, policy_inputs, token_entropy
from rlbound.verify import verify_batch

__all__ = ["RLResult", "read_metrics", "train_rl"]

METRICS_FILE = "metrics.jsonl"


@dataclass
class RLResult:
    """Where the trained model is, and the per-step metrics."""

    model_dir: Path
    metrics: list[dict]


class _Critic(torch.nn.Module):
    """PPO's value model: a trainable copy of the policy's body with a scalar head."""

    def __init__(self, policy):
        super().__init__()
        self.body = policy.frozen_copy()
        for p in self.body.model.parameters():
            p.requires_grad_(True)
        self.body.model.train()
        self.head = torch.nn.Linear(policy.hidden_size(), 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, ids, attention_mask):
        return self.head(self.body.hidden(ids, attention_mask)).squeeze(-1)


def _algorithm(config: TrainerConfig, step: int):
    return algorithm_at(config.algo, step, config.dsrl_switch)


def _weight(config_value: float | None, algo_value: float) -> float:
    return algo_value if config_value is None else config_value


def _save_checkpoint(out: Path, policy, optimizer, critic, critic_opt, step: int, config: TrainerConfig,
                     reference) -> None:
    final, fresh = out / "checkpoint", out / "checkpoint.new"
    shutil.rmtree(fresh, ignore_errors=True)
    policy.save(fresh / "policy", {"rl_step": step})
    if config.algo == "dsrl" and step > config.dsrl_switch:  # the re-synced reference
        reference.save(fresh / "reference", {"rl_step": config.dsrl_switch})
    state = {"step": step, "optimizer": optimizer.state_dict(), "config": config.as_dict()}
    if critic is not None:
        state["critic"] = critic.state_dict()
        state["critic_optimizer"] = critic_opt.state_dict()
    torch.save(state, fresh / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    fresh.rename(final)


def train_rl(model: str | Path, tasks: Task | Sequence[Task], config: TrainerConfig, out_dir: str | Path,
             engine: str = "tiny", description: str | None = None,
             labels: dict[str, str] | None = None, stop_at: int | None = None) -> RLResult:
    """Train ``model`` on the problems of ``tasks`` (one task or several, each verified by its own
    verifier) with ``config.algo``; resume from ``out_dir`` if it holds a checkpoint. ``labels``
    (problem id → a wrong answer, e.g. :func:`rlbound.train.rewards.majority_wrong_labels` of the
    base model's samples) is what the ``incorrect_label`` reward pays for. ``stop_at`` stops after
    that many steps with a checkpoint (as an interruption would; the next call resumes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = _algorithm(config, 0)
    if config.reward == "incorrect_label" and not labels:
        raise RlboundError("train: the incorrect_label reward needs labels (a wrong answer per problem)")
    checkpoint = out / "checkpoint"
    state = None
    if (checkpoint / "state.pt").exists():
        state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=False)
        if {"dtype": "float32", **state["config"]} != config.as_dict():  # checkpoints before dtype: float32
            raise RlboundError(f"train: '{out}' holds a run with other settings; use another --out")
        policy = load_policy(checkpoint / "policy", engine, dtype=config.dtype)
    else:
        policy = load_policy(model, engine, dtype=config.dtype)
    torch.manual_seed(config.seed)
    policy.model.train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    uses_critic = first.value_head
    critic = _Critic(policy) if uses_critic else None
    critic_opt = torch.optim.AdamW(critic.parameters(), lr=config.value_lr) if critic is not None else None
    start = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if critic is not None:
            critic.load_state_dict(state["critic"])
            critic_opt.load_state_dict(state["critic_optimizer"])
        start = int(state["step"])
    # The reference is the starting model (re-synced to the policy at DSRL's switch). It is kept
    # even without a KL term, so every step reports the KL to it.
    if (checkpoint / "reference").exists():
        reference = load_policy(checkpoint / "reference", engine, dtype=config.dtype).frozen_copy()
    elif config.algo == "dsrl" and start == config.dsrl_switch:
        reference = policy.frozen_copy()
    else:
        reference = load_policy(model, engine, dtype=config.dtype).frozen_copy()

    tasks = [tasks] if isinstance(tasks, Task) else list(tasks)
    templates = {t.name: get_template(t.template) for t in tasks}
    verifier_of = {p.id: t.verifier for t in tasks for p in t.problems}
    template_of = {p.id: templates[t.name] for t in tasks for p in t.problems}
    problems = [p for t in tasks for p in t.problems]
    problems = problems[:1] if config.one_shot else problems
    if not problems:
        raise RlboundError("train: the training task has no problems")
    generator = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    reward_fn = make_reward(config.reward, p=config.reward_p, seed=config.seed, labels=labels)
    params = SamplingParams(temperature=config.temperature, max_tokens=config.max_tokens)
    greedy_params = SamplingParams(temperature=0.0, max_tokens=config.max_tokens)
    metrics_path = out / METRICS_FILE
    history = read_metrics(out) if metrics_path.exists() else []
    history = [m for m in history if m["step"] < start]
    metrics_path.write_text("".join(json.dumps(m) + "\n" for m in history))
    for _ in range(start):  # replay the problem order up to the resumed step
        order = _next_batch(order, len(problems), config.prompts_per_step, generator)[1]

    end = config.steps if stop_at is None else min(config.steps, stop_at)
    with progress(description or f"training {config.algo}", total=config.steps, unit="steps") as bar:
        bar.advance(start)
        for step in range(start, end):
            t0 = time.perf_counter()
            algo = _algorithm(config, step)
            if config.algo == "dsrl" and step == config.dsrl_switch:
                reference = policy.frozen_copy()
            picked, order = _next_batch(order, len(problems), config.prompts_per_step, generator)
            batch = [problems[i] for i in picked]
            engine_now = policy.engine()
            prompts = [template_of[p.id].render(p.prompt, engine_now) for p in batch]  # chat: the policy's format
            seeds = [[sample_seed(config.seed * 1_000_003 + step, p.id, j) for j in range(config.group_size)]
                     for p in batch]
            rollouts = engine_now.generate(prompts, params, seeds)
            samples = [s for group in rollouts for s in group]
            groups = torch.tensor([g for g in range(len(batch)) for _ in range(config.group_size)])
            pids = [p.id for p in batch for _ in range(config.group_size)]
            refs = [p.reference for p in batch for _ in range(config.group_size)]
            verdicts = _verify([verifier_of[i] for i in pids], refs, [s.text for s in samples])
            rewards = torch.tensor(reward_fn(pids, verdicts, step=step), dtype=torch.float32)
            correct = torch.tensor([v.correct for v in verdicts])
            lengths = torch.tensor([len(s.token_ids) for s in samples], dtype=torch.float32)
            rewards = shape_rewards(algo, rewards, lengths, config.max_tokens)
            greedy_rewards = None
            if algo.needs_greedy:
                greedy = engine_now.generate(prompts, greedy_params, [[0] for _ in batch])
                g_verdicts = _verify([verifier_of[p.id] for p in batch],
                                     [p.reference for p in batch], [g[0].text for g in greedy])
                per_prompt = torch.tensor(reward_fn([p.id for p in batch], g_verdicts, step=step),
                                          dtype=torch.float32)
                greedy_rewards = per_prompt[groups]  # each sample's own prompt's greedy reward
            if algo.advantage in TOKEN_LEVEL_ADVANTAGES:  # computed per token inside the update
                seq_adv, keep = torch.zeros(len(samples)), filter_keep(algo.sample_filter, groups, correct)
            else:
                seq_adv, keep = sequence_advantages(algo, rewards, groups, correct, greedy_rewards)
            record = {"step": step, "algo": algo.name, "reward": float(rewards.mean()),
                      "accuracy": float(correct.float().mean()), "response_length": float(lengths.mean()),
                      "kept": int(keep.sum()), "samples": len(samples)}
            if int(keep.sum()) > 0:
                record.update(_update(policy, reference, critic, optimizer, critic_opt, algo, config, step,
                                      [policy.encode_prompt(prompts[g]) for g in groups.tolist()],
                                      [s.token_ids for s in samples], keep, seq_adv, rewards))
            record["wall_s"] = round(time.perf_counter() - t0, 3)
            history.append(record)
            with open(metrics_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            bar.set_postfix(f"reward {record['reward']:.3f} acc {record['accuracy']:.3f}")
            bar.advance(1)
            if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
                _save_checkpoint(out, policy, optimizer, critic, critic_opt, step + 1, config, reference)
    if end < config.steps:
        _save_checkpoint(out, policy, optimizer, critic, critic_opt, end, config, reference)
        return RLResult(checkpoint / "policy", history)
    policy.model.eval()
    final = out / "model"
    tmp = out / "model.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save(tmp, {"rl": {"algo": config.algo, "config": config.as_dict(), "source": str(model),
                             "tasks": [t.name for t in tasks], "steps": config.steps}})
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    shutil.rmtree(checkpoint, ignore_errors=True)
    return RLResult(final, history)


def read_metrics(out_dir: str | Path) -> list[dict]:
    """The per-step metrics a training run in ``out_dir`` has written so far."""
    text = (Path(out_dir) / METRICS_FILE).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _verify(verifiers: list[str], references: list[str], texts: list[str]) -> list:
    """Verdicts in input order, each text checked by its own problem's verifier."""
    verdicts: list = [None] * len(texts)
    for name in sorted(set(verifiers)):
        rows = [i for i, v in enumerate(verifiers) if v == name]
        for i, verdict in zip(rows, verify_batch(name, [references[i] for i in rows], [texts[i] for i in rows])):
            verdicts[i] = verdict
    return verdicts


def _next_batch(order: list[int], n: int, size: int, generator) -> tuple[list[int], list[int]]:
    picked: list[int] = []
    while len(picked) < size:
        if not order:
            order = torch.randperm(n, generator=generator).tolist()
        take = min(size - len(picked), len(order))
        picked, order = picked + order[:take], order[take:]
    return picked, order


def training_rows(policy, conditioning: str, prompt_ids, response_ids):
    """(ids, response mask, attention mask) of the rows the loss is computed on.

    ``prompt_ids`` are the ids the engine fed when it sampled (``policy.encode_prompt``: BOS
    included where the engine adds one), so ``"prompt"`` rows are exactly the sampled context
    followed by the response; ``"response_only"`` rows (PreRL) are ``BOS + response``.
    """
    bos = policy.bos_id if conditioning == "response_only" else None
    ids, mask, _ = policy_inputs(prompt_ids, response_ids, conditioning, bos, policy.pad_id)
    lengths = [len(r) + (len(p) if conditioning == "prompt" else 1) for p, r in zip(prompt_ids, response_ids)]
    attention = (torch.arange(ids.shape[1])[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids, mask, attention


def _update(policy, reference, critic, optimizer, critic_opt, algo, config, step, prompt_ids, response_ids,
            keep, seq_adv, rewards) -> dict:
    """One rollout batch's optimiser steps; returns the batch's loss metrics."""
    rows = keep.nonzero().flatten().tolist()
    prompt_ids = [prompt_ids[i] for i in rows]
    response_ids = [response_ids[i] for i in rows]
    if algo.conditioning == "response_only" and policy.bos_id is None:
        raise RlboundError("train: PreRL needs a BOS token to condition on; this tokenizer has none")
    ids, mask, attention = training_rows(policy, algo.conditioning, prompt_ids, response_ids)
    mask_f = mask.float()
    with torch.no_grad():
        old_logp = gather_logprobs(policy.logits(ids, attention), ids, mask)
        ref_logp = gather_logprobs(reference.logits(ids, attention), ids, mask)
        values = critic(ids, attention) if critic is not None else None
    kl_coef = _weight(config.kl_coef, algo.kl_coef)
    entropy_coef = _weight(config.entropy_coef, algo.entropy_coef)
    returns = None
    if algo.advantage in ("gae", "reinforce_pp"):
        token_kl = kl_estimate(old_logp, ref_logp, "k1") * mask_f
        adv, returns = token_advantages(algo, rewards[rows], mask, values=values, token_kl=token_kl,
                                        kl_coef=kl_coef if algo.kl_in_reward else 0.0)
    else:
        adv = seq_adv[rows][:, None] * mask_f
    totals: dict[str, float] = {}
    count = 0
    n = len(rows)
    for _ in range(config.updates_per_batch):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + step))
        for chunk in perm.chunk(config.minibatches):
            logits = policy.logits(ids[chunk], attention[chunk])
            logp = gather_logprobs(logits, ids[chunk], mask[chunk])
            entropy = token_entropy(logits, mask[chunk])
            in_loss = kl_coef > 0 and not algo.kl_in_reward
            loss, metrics = policy_loss(
                algo, logp, old_logp[chunk], adv[chunk], mask[chunk],
                ref_logp=ref_logp[chunk] if in_loss else None,
                entropy=entropy, kl_coef=kl_coef, entropy_coef=entropy_coef, max_len=config.max_tokens,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(list(policy.parameters()), config.grad_clip)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup))
            optimizer.step()
            if critic is not None:
                v_loss = value_loss(critic(ids[chunk], attention[chunk]), returns[chunk], mask[chunk],
                                    old_values=values[chunk])
                critic_opt.zero_grad(set_to_none=True)
                v_loss.backward()
                torch.nn.utils.clip_grad_norm_(list(critic.parameters()), config.grad_clip)
                critic_opt.step()
                metrics["value_loss"] = float(v_loss.detach())
            metrics["loss"] = float(loss.detach())
            for key, value in metrics.items():
                value = float(value)
                if math.isfinite(value):
                    totals[key] = totals.get(key, 0.0) + value
            count += 1
    result = {key: value / count for key, value in totals.items()}
    # KL(policy before this update ‖ reference), k3 estimator, mean over response tokens
    result["kl"] = float((kl_estimate(old_logp, ref_logp, "k3") * mask_f).sum() / mask_f.sum().clamp(min=1))
    # and k1 (mean log-ratio): noisier, but without k3's heavy tail, which explodes under PreRL
    result["kl_k1"] = float((kl_estimate(old_logp, ref_logp, "k1") * mask_f).sum() / mask_f.sum().clamp(min=1))
    return result
