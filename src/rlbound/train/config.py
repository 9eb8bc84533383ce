"""The trainer's one typed configuration: every knob of :func:`rlbound.train.loop.train_rl`.

The algorithm (advantage estimator, loss aggregation, clipping, sample filter, conditioning) is
chosen by name from :data:`rlbound.train.algorithms.ALGORITHMS`; the fields here are what every
algorithm shares (rollout sizes, optimiser, reward, KL and entropy weights, checkpoints).
``kl_coef`` and ``entropy_coef`` left at ``None`` keep the algorithm's own defaults (0 for all but
REINFORCE++, as in the papers).

What it does not do: run anything; read files (the CLI and the lab build it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rlbound.errors import RlboundError

__all__ = ["TrainerConfig"]


@dataclass(frozen=True)
class TrainerConfig:
    """Knobs of one policy-gradient run."""

    algo: str = "grpo"
    """Algorithm name (``rlbound train --help`` lists them)."""
    steps: int = 40
    """Policy updates (one rollout batch each)."""
    prompts_per_step: int = 16
    """Problems per rollout batch."""
    group_size: int = 8
    """Samples per problem (the group of GRPO / RLOO / DAPO)."""
    temperature: float = 1.0
    """Rollout sampling temperature."""
    max_tokens: int = 160
    """Longest response."""
    lr: float = 1e-4
    """AdamW learning rate (constant after a short warm-up)."""
    warmup: int = 3
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    updates_per_batch: int = 1
    """Optimiser passes over each rollout batch (1 = on-policy; > 1 makes the clipping matter)."""
    minibatches: int = 1
    """Minibatches per pass over the rollout batch."""
    kl_coef: float | None = None
    """KL-to-reference weight; None keeps the algorithm's default."""
    entropy_coef: float | None = None
    """Entropy bonus weight; None keeps the algorithm's default."""
    reward: str = "correct"
    """Reward function: correct, random, inverse, format_only, incorrect_label."""
    reward_p: float = 0.5
    """Success probability of the ``random`` reward."""
    one_shot: bool = False
    """Train on one problem only (the first of the training task), repeated every step."""
    dsrl_switch: int = 10
    """DSRL: steps of NSR-PreRL before switching to GRPO on P(y|x)."""
    value_lr: float = 1e-4
    """PPO critic learning rate."""
    checkpoint_every: int = 10
    """Steps between checkpoints (resume after an interruption loses at most this many)."""
    seed: int = 0
    dtype: str = "float32"
    """Compute format of a tiny policy: auto (bfloat16 where the CPU has it), float32 or bfloat16
    (forward passes under autocast, rollouts from a bfloat16 copy; weights stay float32)."""

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step", "group_size", "max_tokens", "updates_per_batch", "minibatches"):
            if getattr(self, name) < 1:
                raise RlboundError(f"train: {name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise RlboundError(f"train: temperature must be > 0 for rollouts, got {self.temperature}")
        if self.lr <= 0:
            raise RlboundError(f"train: lr must be > 0, got {self.lr}")

    def as_dict(self) -> dict:
        return asdict(self)
