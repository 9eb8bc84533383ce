"""PreRL, NSR-PreRL, PSR-PreRL and DSRL on TRL's ``GRPOTrainer``: RL on log P(y), prompt dropped.

PreRL (Tan et al. 2026, "From P(y|x) to P(y): Investigating Reinforcement Learning in Pre-train
Space", arXiv 2604.14142) optimises the clipped policy-gradient loss on the policy's
log-likelihood of its own response *without the prompt*: each row is a BOS token then the
response, positions restarted at 0, for the current, old and reference log-probs alike. DSRL
(the same paper's "Dual Space RL") runs NSR-PreRL for ``dsrl_switch`` optimiser steps, then
GRPO on log P(y|x) with the reference re-synced to the policy. :class:`PreRLTrainer` runs them
with TRL's generation back-ends (transformers, vLLM) on real models::

    from rlbound.integrations.trl import math_reward
    from rlbound.integrations.trl_prerl import PreRLConfig, PreRLTrainer

    args = PreRLConfig(output_dir="out", algo="nsr_prerl", num_generations=8, ...)
    PreRLTrainer(model=..., reward_funcs=[math_reward()], args=args, train_dataset=ds).train()

The semantics are rlbound's own (:data:`rlbound.train.algorithms.ALGORITHMS`), through the same
code: the rows come from :func:`rlbound.train.sequences.policy_inputs` with
``conditioning="response_only"`` (one implementation of the sequence building); advantages and
the sample filter from :func:`rlbound.train.algorithms.sequence_advantages` (r - group mean, no
std; NSR-PreRL keeps wrong samples only, PSR-PreRL correct ones; a sample is "correct" when its
total reward is > 0); the phase from :func:`rlbound.train.algorithms.algorithm_at`. Filtered-out
samples leave the loss and its token count, as in rlbound's loop. The loss aggregation and clip
bounds are the algorithm's: ``token_mean`` is TRL's ``loss_type="dapo"`` (tokens of the whole
generation batch), ``seq_mean_token_mean`` (DSRL's GRPO phase) is ``"grpo"``; so
``GRPOConfig.loss_type``, ``epsilon``, ``epsilon_high`` and ``scale_rewards`` are overridden.

Differences from rlbound's loop, all TRL's: log-probs are taken at the sampling temperature (TRL
divides the logits by ``temperature``; rlbound's loop scores at temperature 1, so the two agree at
``temperature=1.0``); a batch whose samples are all filtered out still takes an optimiser step
with a zero loss (AdamW's momentum and weight decay act; rlbound's loop skips the step); the DSRL
phase is chosen when a generation batch is drawn (with ``steps_per_generation > 1`` the switch
falls on a generation boundary). During the PreRL phases TRL's vLLM importance-sampling
correction is off (vLLM's sampling log-probs are log P(y|x), not log P(y)).

What it does not do: tools, environments, custom rollout functions and images (a response
without its prompt has no images to see); DSRL with a KL term on a PEFT model (there is no
separate reference model to re-sync).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from trl import GRPOConfig, GRPOTrainer

from rlbound.errors import RlboundError
from rlbound.train.algorithms import Algorithm, algorithm_at, sequence_advantages
from rlbound.train.sequences import policy_inputs

__all__ = ["PRERL_ALGORITHMS", "PreRLConfig", "PreRLTrainer", "response_only_logprobs"]

PRERL_ALGORITHMS = ("prerl", "nsr_prerl", "psr_prerl", "dsrl")
#: rlbound's loss aggregation -> TRL's loss_type computing the same scalar.
LOSS_TYPES = {"token_mean": "dapo", "seq_mean_token_mean": "grpo", "seq_mean_token_sum_norm": "dr_grpo"}
_MULTIMODAL = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
               "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


@dataclass
class PreRLConfig(GRPOConfig):
    """:class:`trl.GRPOConfig` plus the PreRL family's choices (module docstring)."""

    algo: str = field(default="prerl", metadata={"help": (
        "prerl: clipped loss on log P(y), advantage r - group mean (Tan et al. 2026, 'From P(y|x) "
        "to P(y)', arXiv 2604.14142); nsr_prerl: wrong samples only; psr_prerl: correct samples "
        "only; dsrl: nsr_prerl for dsrl_switch steps, then GRPO on log P(y|x) (the same paper's "
        "Dual Space RL).")})
    dsrl_switch: int = field(default=10, metadata={"help": (
        "DSRL: optimiser steps of NSR-PreRL before the switch to GRPO on log P(y|x), where the "
        "reference model (if any: beta > 0) is re-synced to the policy.")})
    prerl_bos_token_id: int | None = field(default=None, metadata={"help": (
        "The token that starts a prompt-free row (default: the tokenizer's BOS). For a model "
        "without BOS, the token its pretraining put between documents (e.g. <|endoftext|>).")})

    def __post_init__(self):
        if self.algo not in PRERL_ALGORITHMS:
            raise RlboundError(f"PreRLConfig: algo must be one of {', '.join(PRERL_ALGORITHMS)}, got "
                               f"{self.algo!r}")
        if self.dsrl_switch < 0:
            raise RlboundError(f"PreRLConfig: dsrl_switch must be >= 0, got {self.dsrl_switch}")
        super().__post_init__()


def response_only_logprobs(model, completion_ids: torch.Tensor, completion_mask: torch.Tensor, bos_id: int,
                           pad_id: int, *, batch_size: int | None = None, compute_entropy: bool = False,
                           compute_aux_loss: bool = False):
    """Per-token ``log P(y)`` of right-padded completions ``[B, C]`` under ``model`` (patched by
    TRL's fused LM head, so its temperature applies): rows ``BOS + response`` built by
    :func:`~rlbound.train.sequences.policy_inputs`, positions from 0. Returns ``(logps [B, C],
    entropies [B, C] or None, aux_loss or None)``, 0 at padding, like TRL's own method."""
    B, C = completion_ids.shape
    device = completion_ids.device
    keep = completion_mask.bool()
    responses = [completion_ids[b][keep[b]].tolist() for b in range(B)]
    ids, mask, _ = policy_inputs([[] for _ in responses], responses, "response_only", bos_id, pad_id)
    if ids.shape[1] < 2:  # every response empty: one pad column keeps the forward pass well-formed
        ids, mask = F.pad(ids, (0, 1), value=pad_id), F.pad(mask, (0, 1))
    ids, mask = ids.to(device), mask.to(device)
    lengths = mask.sum(dim=1) + 1  # BOS + response
    attention = (torch.arange(ids.shape[1], device=device)[None, :] < lengths[:, None]).long()
    labels = torch.full_like(ids, -100)
    labels[:, 1:] = torch.where(mask[:, :-1], ids[:, 1:], -100)  # column t scores token t + 1
    batch_size = batch_size or B
    logps, entropies, aux = [], [], []
    for start in range(0, B, batch_size):
        rows = slice(start, start + batch_size)
        extra = {"output_router_logits": True} if compute_aux_loss else {}
        out = model(input_ids=ids[rows], attention_mask=attention[rows], labels=labels[rows],
                    fused_lm_head=True, **extra)
        logps.append(out.log_probs)
        if compute_entropy:
            entropies.append(out.entropy)
        if compute_aux_loss:
            aux.append(out.aux_loss)

    def to_completion(parts):  # [B, L-1] on the response_only mask -> [B, C] completion positions
        x = torch.cat(parts, dim=0)[:, :C] * mask[:, : min(C, ids.shape[1] - 1)]
        return F.pad(x, (0, C - x.shape[1]))

    return (to_completion(logps), to_completion(entropies) if compute_entropy else None,
            torch.stack(aux).mean() if compute_aux_loss else None)


class PreRLTrainer(GRPOTrainer):
    """``GRPOTrainer`` running rlbound's PreRL family (module docstring); use with
    :class:`PreRLConfig`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, PreRLConfig):
            raise RlboundError("PreRLTrainer needs args=PreRLConfig(...) (it holds algo and dsrl_switch)")
        if self.tools or self.environment_factories is not None or self.rollout_func is not None:
            raise RlboundError("PreRLTrainer: tools, environments and rollout functions are not supported")
        if self._is_vlm:
            raise RlboundError("PreRLTrainer: vision-language models are not supported (a response "
                               "without its prompt has no images)")
        if self.off_policy_mask_threshold is not None:
            raise RlboundError("PreRLTrainer: off_policy_mask_threshold compares with the sampler's "
                               "log P(y|x); leave it unset")
        if self.args.algo == "dsrl" and self.beta != 0.0 and self.ref_model is None:
            raise RlboundError("PreRLTrainer: DSRL with beta > 0 re-syncs the reference model at the "
                               "switch; a PEFT model has none to re-sync (set beta=0)")
        bos = self.args.prerl_bos_token_id
        bos = self._tokenizer.bos_token_id if bos is None else bos
        if bos is None:
            raise RlboundError("PreRLTrainer: the tokenizer has no BOS token to start a prompt-free row; "
                               "set PreRLConfig(prerl_bos_token_id=...) to the token its pretraining put "
                               "between documents")
        self.prerl_bos_id, self.prerl_pad_id = int(bos), int(self._tokenizer.pad_token_id)
        self._vllm_is_correction = self.vllm_importance_sampling_correction
        self._set_phase(algorithm_at(self.args.algo, 0, self.args.dsrl_switch))

    def _set_phase(self, algo: Algorithm) -> None:
        self.algorithm = algo
        self.loss_type = LOSS_TYPES[algo.aggregation]
        self.epsilon_low, self.epsilon_high = algo.clip_low, algo.clip_high
        prompt_free = algo.conditioning == "response_only"
        self.vllm_importance_sampling_correction = self._vllm_is_correction and not prompt_free

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                           **multimodal):
        if self.algorithm.conditioning == "prompt":
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **multimodal)
        if any(multimodal.get(k) is not None for k in _MULTIMODAL):
            raise RlboundError("PreRLTrainer: multimodal inputs are not supported")
        with self.accelerator.autocast():
            return response_only_logprobs(
                model, input_ids[:, -logits_to_keep:], attention_mask[:, -logits_to_keep:], self.prerl_bos_id,
                self.prerl_pad_id, batch_size=batch_size, compute_entropy=compute_entropy,
                compute_aux_loss=compute_aux_loss)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards_per_func = rewards_per_func  # gathered over processes, [N, n_funcs]
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        if mode == "train":
            algo = algorithm_at(self.args.algo, self.state.global_step, self.args.dsrl_switch)
            if algo.name != self.algorithm.name and self.ref_model is not None:
                # DSRL's switch: the reference becomes the current policy ("reincarnation")
                self.ref_model.load_state_dict(self.accelerator.unwrap_model(self.model).state_dict())
            self._set_phase(algo)
        output = super()._generate_and_score_completions(inputs)

        per_func = self._rewards_per_func
        rewards = (per_func * self.reward_weights.to(per_func.device)[None, :]).nansum(dim=1).cpu()
        scorable = ~torch.isnan(per_func).all(dim=1).cpu()
        group = self.num_generations if mode == "train" else self.num_generations_eval
        groups = torch.arange(len(rewards)) // group
        advantages, keep = sequence_advantages(self.algorithm, rewards, groups, rewards > 0)
        keep = keep & scorable
        advantages = torch.where(keep, advantages, torch.zeros_like(advantages))

        local = len(output["advantages"])
        rows = slice(self.accelerator.process_index * local, (self.accelerator.process_index + 1) * local)
        device = output["advantages"].device
        output["advantages"] = advantages[rows].to(device)
        kept = keep[rows].to(device)
        mask = output["completion_mask"] * kept[:, None].to(output["completion_mask"].dtype)
        output["completion_mask"] = mask
        loss_mask = mask if "tool_mask" not in output else mask * output["tool_mask"]
        output["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()

        logged = self._logs["advantages"]  # the completions table shows the advantages trained on
        for _ in range(min(len(advantages), len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())
        self._metrics[mode]["prerl/kept_fraction"].append(keep.float().mean().item())
        self._metrics[mode]["prerl/response_only"].append(float(self.algorithm.conditioning == "response_only"))
        return output
