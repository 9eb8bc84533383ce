"""RL algorithms as small objects, and the pure tensor functions they are made of.

An :class:`Algorithm` chooses the advantage estimator, the loss aggregation, the ratio clipping,
the KL term, the entropy bonus, a sample filter and the conditioning (``log P(y|x)`` or PreRL's
``log P(y)``). :data:`ALGORITHMS` holds the published ones by name, each citing its paper and
stating its defaults; :func:`dsrl_phase` is the DSRL schedule.

The functions here are pure (torch tensors in, tensors out): no model, no I/O, no optimiser. The
training loop calls them in this order each step::

    rewards = shape_rewards(algo, rewards, lengths, max_tokens)      # DAPO overlong shaping
    adv = compute_advantages(algo, rewards, groups, mask, correct, ...)  # adv [B,T], keep [B]
    # (or sequence_advantages, or token_advantages on the kept rows, directly)
    loss, metrics = policy_loss(algo, logp, old_logp, adv.advantages,
                                mask * adv.keep[:, None], ref_logp, entropy, max_len)

Conventions (one place, used everywhere):

* ``mask`` is the ``[B, T]`` response mask of :mod:`rlbound.train.sequences`: ``mask[b, t]``
  marks the positions whose per-token log-prob scores a response token (EOS included when the
  sample stopped at EOS). Per-token tensors (``logp``, advantages, KL, values) share it.
* ``groups[b]`` is an integer naming the group (prompt) of sample ``b``; groups need not be
  contiguous or of equal size.
* Group standard deviation (GRPO, DAPO) is the *sample* std (Bessel, ``n - 1``), as ``torch.std``
  computes it in TRL's and verl's GRPO; ``eps = 1e-6`` is added to it. A group of one sample
  gets advantage 0 under every group-baseline estimator (no baseline exists).
* REINFORCE++ and PPO whitening use the *population* mean/variance over all valid tokens of the
  batch, ``(x - mean) / sqrt(var + 1e-8)`` (OpenRLHF's ``masked_normalize``).
* A sample with ``keep[b] == False`` (filtered out: DAPO dynamic sampling, PSR / NSR, the PreRL
  filters) is *dropped from the loss*, including from its normalisers (token counts, number of
  sequences). Implementations that instead zero such samples' advantages but keep them in the
  denominator differ from this by a per-batch constant factor.
* Losses are *minimised*: the policy loss is ``-min(ratio * A, clip(ratio) * A)`` per token.

What this module does not do: no dual-clip PPO, no adaptive KL controller, no sequence-level
importance ratios (GSPO); DAPO's dynamic sampling returns a keep mask, and re-sampling to refill
the batch is the loop's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from rlbound.errors import RlboundError

ADVANTAGES = ("gae", "grpo", "dr_grpo", "rloo", "reinforce_pp", "remax", "psr", "nsr",
              "w_reinforce", "group_mean")
TOKEN_LEVEL_ADVANTAGES = ("gae", "reinforce_pp")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
SAMPLE_FILTERS = ("none", "dynamic", "correct_only", "wrong_only")
CONDITIONINGS = ("prompt", "response_only")
KL_ESTIMATORS = ("k1", "k2", "k3")
STD_EPS = 1e-6
WHITEN_EPS = 1e-8


@dataclass(frozen=True)
class OverlongShaping:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), added to the outcome reward.

    With ``L_max = max_len`` and ``L_cache = cache_len``, a response of ``L`` tokens gets
    ``0`` if ``L <= L_max - L_cache``, ``penalty * ((L_max - L_cache) - L) / L_cache`` in
    between (linear from 0 down to ``-penalty`` at ``L = L_max``) and ``-penalty`` beyond.
    DAPO used ``L_max = 20480`` and ``L_cache = 4096``, i.e. a cache of 20 % of the budget.
    """

    cache_fraction: float = 0.2
    """``L_cache / L_max`` when ``cache_len`` is not given (DAPO: 4096 / 20480)."""
    penalty: float = 1.0
    """Penalty at ``L_max`` (verl's ``overlong_penalty_factor``; DAPO: 1)."""
    max_len: int | None = None
    """``L_max``; None: the rollout's ``max_tokens``."""
    cache_len: int | None = None
    """``L_cache``; None: ``round(cache_fraction * L_max)``."""

    def resolve(self, max_tokens: int | None) -> tuple[int, int]:
        max_len = self.max_len if self.max_len is not None else max_tokens
        if max_len is None:
            raise RlboundError("overlong shaping needs max_len or the rollout's max_tokens")
        cache = self.cache_len
        if cache is None:
            cache = round(self.cache_fraction * max_len)
        return int(max_len), max(1, int(cache))


@dataclass(frozen=True)
class Algorithm:
    """One policy-gradient algorithm (see the module docstring; defaults are GRPO's)."""

    name: str
    """Registry name, recorded with every run."""
    advantage: str = "grpo"
    """Estimator: ``gae`` (PPO), ``grpo`` ((r - mean)/(std + eps) in the group, Shao et al.
    2024), ``dr_grpo`` (r - group mean, Liu et al. 2025), ``rloo`` (r - mean of the group's
    other samples, Ahmadian et al. 2024), ``reinforce_pp`` (returns normalised over the batch,
    Hu 2025), ``remax`` (r - reward of the prompt's greedy rollout, Li et al. 2023), ``psr`` /
    ``nsr`` / ``w_reinforce`` (Zhu et al. 2025), ``group_mean`` (r - group mean, PreRL)."""
    aggregation: str = "seq_mean_token_mean"
    """How per-token losses become a scalar: ``token_mean`` (all tokens of the batch, DAPO),
    ``seq_mean_token_mean`` (per sequence, then over sequences: GRPO's 1/|o_i|),
    ``seq_mean_token_sum_norm`` (token sum / constant max length, mean over sequences:
    Dr.GRPO)."""
    clip_low: float = 0.2
    """Ratio lower bound ``1 - clip_low`` (PPO's epsilon, Schulman et al. 2017)."""
    clip_high: float = 0.2
    """Ratio upper bound ``1 + clip_high`` (DAPO's clip-higher raises it to 0.28)."""
    kl_coef: float = 0.0
    """Weight of the KL to the reference model (0 by default, as in the R1-Zero-like recipes;
    DeepSeekMath's GRPO used 0.04)."""
    kl_estimator: str = "k3"
    """KL estimator of the loss term: ``k1`` log-ratio, ``k2`` squared, ``k3`` Schulman's
    unbiased non-negative one (GRPO)."""
    kl_in_reward: bool = False
    """Fold ``-kl_coef * KL_t`` (k1, old policy vs reference) into per-token rewards instead of
    the loss (REINFORCE++, classic RLHF PPO)."""
    entropy_coef: float = 0.0
    """Entropy bonus weight (subtracted from the loss)."""
    sample_filter: str = "none"
    """``none``; ``dynamic`` (DAPO: drop groups whose samples are all correct or all wrong);
    ``correct_only`` / ``wrong_only`` (keep only correct / wrong samples: PSR-/NSR-PreRL)."""
    conditioning: str = "prompt"
    """``prompt``: log P(y|x); ``response_only``: PreRL's log P(y) (BOS + response, positions
    restarted), for the current *and* the old log-probs."""
    overlong: OverlongShaping | None = None
    """DAPO soft overlong punishment, or None."""
    gae_gamma: float = 1.0
    """GAE discount (PPO; 1.0 as in TRL / verl / OpenRLHF for LMs). Also REINFORCE++'s gamma."""
    gae_lambda: float = 0.95
    """GAE lambda (PPO; TRL and OpenRLHF default 0.95)."""
    whiten: bool = False
    """Whiten GAE advantages over the batch's tokens (PPO in verl / OpenRLHF)."""
    lam: float = 0.1
    """W-REINFORCE's weight of positive samples (Zhu et al. 2025: lambda = 0.1)."""
    reference: str = field(default="", compare=False)
    """The paper, for humans and the run record."""

    def __post_init__(self) -> None:
        checks = (("advantage", ADVANTAGES), ("aggregation", AGGREGATIONS),
                  ("sample_filter", SAMPLE_FILTERS), ("conditioning", CONDITIONINGS),
                  ("kl_estimator", KL_ESTIMATORS))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise RlboundError(f"algorithm {self.name!r}: {name} must be one of "
                                   f"{', '.join(allowed)}, got {getattr(self, name)!r}")
        if not (0 <= self.clip_low < 1 and self.clip_high >= 0):
            raise RlboundError(f"algorithm {self.name!r}: need 0 <= clip_low < 1 and "
                               f"clip_high >= 0, got {self.clip_low}, {self.clip_high}")
        for name in ("kl_coef", "entropy_coef", "lam"):
            if getattr(self, name) < 0:
                raise RlboundError(f"algorithm {self.name!r}: {name} must be >= 0")
        if not (0 <= self.gae_gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise RlboundError(f"algorithm {self.name!r}: gae_gamma and gae_lambda must be "
                               "in [0, 1]")

    @property
    def value_head(self) -> bool:
        """Whether the loop must train a value head (PPO's GAE needs values)."""
        return self.advantage == "gae"

    @property
    def needs_greedy(self) -> bool:
        """Whether the loop must roll out one greedy sample per prompt (ReMax's baseline)."""
        return self.advantage == "remax"

    @property
    def needs_reference(self) -> bool:
        """Whether a frozen reference model's log-probs are needed (any KL term)."""
        return self.kl_coef > 0


_ENTRIES = (
    Algorithm("ppo", advantage="gae", aggregation="token_mean", whiten=True,
              reference="PPO: Schulman et al. 2017, 'Proximal Policy Optimization Algorithms'. "
              "Clip 0.2, value head, GAE gamma 1 / lambda 0.95, whitened advantages, "
              "token-mean loss, no KL."),
    Algorithm("grpo", advantage="grpo", aggregation="seq_mean_token_mean",
              reference="GRPO: Shao et al. 2024, 'DeepSeekMath'. (r - mean)/(std + eps) in the "
              "group, 1/|o_i| per sequence then mean over the group, clip 0.2, KL 0 (paper: "
              "0.04, k3)."),
    Algorithm("dr_grpo", advantage="dr_grpo", aggregation="seq_mean_token_sum_norm",
              reference="Dr.GRPO: Liu et al. 2025, 'Understanding R1-Zero-Like Training'. "
              "r - group mean (no std), token sum / constant max length, clip 0.2, KL 0."),
    Algorithm("rloo", advantage="rloo", aggregation="seq_mean_token_sum_norm",
              reference="RLOO: Ahmadian et al. 2024, 'Back to Basics: Revisiting REINFORCE "
              "Style Optimization'. Leave-one-out baseline, whole response as one action "
              "(token sum, normalised by a constant), clip 0.2 (inactive on-policy), KL 0."),
    Algorithm("reinforce_pp", advantage="reinforce_pp", aggregation="token_mean",
              kl_coef=1e-3, kl_estimator="k1", kl_in_reward=True,
              reference="REINFORCE++: Hu 2025, 'REINFORCE++: A Simple and Efficient Approach "
              "for Aligning LLMs'. Per-token reward -beta*KL_t (k1) + outcome at the last "
              "token, returns (gamma 1) normalised over the batch's tokens, clip 0.2, "
              "token-mean; beta = 1e-3 as in OpenRLHF's examples."),
    Algorithm("remax", advantage="remax", aggregation="seq_mean_token_sum_norm",
              reference="ReMax: Li et al. 2023, 'ReMax: A Simple, Effective, and Efficient RL "
              "Method for Aligning LLMs'. r - r(greedy rollout of the same prompt), whole "
              "response as one action, KL 0."),
    Algorithm("dapo", advantage="grpo", aggregation="token_mean", clip_low=0.2, clip_high=0.28,
              sample_filter="dynamic", overlong=OverlongShaping(),
              reference="DAPO: Yu et al. 2025, 'DAPO: An Open-Source LLM RL System at Scale'. "
              "Clip-higher 0.2/0.28, dynamic sampling, token-level loss, soft overlong "
              "punishment (cache 20 % of the budget, penalty 1), group-normalised advantage, "
              "no KL."),
    Algorithm("psr", advantage="psr", aggregation="token_mean",
              reference="PSR: Zhu et al. 2025, 'The Surprising Effectiveness of Negative "
              "Reinforcement in LLM Reasoning'. A = r on correct samples, wrong ones dropped."),
    Algorithm("nsr", advantage="nsr", aggregation="token_mean",
              reference="NSR: Zhu et al. 2025 (as PSR). A = -1 on wrong samples, correct ones "
              "dropped."),
    Algorithm("w_reinforce", advantage="w_reinforce", aggregation="token_mean", lam=0.1,
              reference="W-REINFORCE: Zhu et al. 2025 (as PSR). A = lambda*r on correct "
              "(lambda 0.1), -1 on wrong."),
    Algorithm("prerl", advantage="group_mean", aggregation="token_mean",
              conditioning="response_only",
              reference="PreRL: Tan et al. 2026, 'From P(y|x) to P(y): Investigating "
              "Reinforcement Learning in Pre-train Space' (arXiv 2604.14142). Clipped loss on "
              "log P(y) (BOS + response), current and old; r - group mean, no std."),
    Algorithm("nsr_prerl", advantage="group_mean", aggregation="token_mean",
              conditioning="response_only", sample_filter="wrong_only",
              reference="NSR-PreRL: Tan et al. 2026 (as PreRL), wrong samples only."),
    Algorithm("psr_prerl", advantage="group_mean", aggregation="token_mean",
              conditioning="response_only", sample_filter="correct_only",
              reference="PSR-PreRL: Tan et al. 2026 (as PreRL), correct samples only."),
)
ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in _ENTRIES}
"""The published algorithms by name (schedules such as ``dsrl`` are in :data:`SCHEDULES`)."""
SCHEDULES = ("dsrl",)


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called ``name`` (:class:`RlboundError` listing the names if unknown)."""
    if name in ALGORITHMS:
        return ALGORITHMS[name]
    if name in SCHEDULES:
        raise RlboundError(f"{name!r} is a schedule; use algorithm_at(name, step, switch_step)")
    known = ", ".join(sorted([*ALGORITHMS, *SCHEDULES]))
    raise RlboundError(f"unknown algorithm {name!r} (known: {known})")


def dsrl_phase(step: int, switch_step: int) -> Algorithm:
    """DSRL (Tan et al. 2026, 'Dual Space RL'): NSR-PreRL for steps ``0 .. switch_step-1``,
    then GRPO on log P(y|x).

    The loop must, at ``step == switch_step``: re-sync the reference model to the current policy
    (the policy is "reincarnated"), and compute old log-probs with the new conditioning (they are
    recomputed every step anyway). The returned objects are named ``dsrl/nsr_prerl`` and
    ``dsrl/grpo`` so metrics say which phase produced them.
    """
    if switch_step < 0:
        raise RlboundError(f"dsrl: switch step must be >= 0, got {switch_step}")
    base = ALGORITHMS["nsr_prerl"] if step < switch_step else ALGORITHMS["grpo"]
    return replace(base, name=f"dsrl/{base.name}")


def algorithm_at(name: str, step: int, switch_step: int | None = None) -> Algorithm:
    """The algorithm in force at ``step``: a fixed one, or a schedule's phase."""
    if name == "dsrl":
        if switch_step is None:
            raise RlboundError("dsrl needs a switch step (steps of NSR-PreRL before GRPO)")
        return dsrl_phase(step, switch_step)
    return get_algorithm(name)


# -- outcome-level estimators ------------------------------------------------------------------


def _group_stats(x: torch.Tensor, groups: torch.Tensor):
    """Per-sample group index, group sizes, means and sums of squared deviations."""
    _, inv = torch.unique(groups, return_inverse=True)
    k = int(inv.max()) + 1 if len(inv) else 0
    n = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, inv, torch.ones_like(x))
    mean = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, inv, x) / n
    dev2 = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, inv, (x - mean[inv]) ** 2)
    return inv, n, mean, dev2


def filter_keep(sample_filter: str, groups, correct) -> torch.Tensor:
    """Keep mask ``[B]`` (bool) of a sample filter (see :attr:`Algorithm.sample_filter`)."""
    correct = torch.as_tensor(correct).bool()
    if sample_filter == "none":
        return torch.ones_like(correct)
    if sample_filter == "dynamic":
        return dynamic_sampling_keep(groups, correct)
    if sample_filter == "correct_only":
        return correct.clone()
    if sample_filter == "wrong_only":
        return ~correct
    raise ValueError(f"unknown sample filter {sample_filter!r}")


def dynamic_sampling_keep(groups, correct) -> torch.Tensor:
    """DAPO dynamic sampling: keep the samples of groups with ``0 < #correct < group size``."""
    groups, correct = torch.as_tensor(groups), torch.as_tensor(correct).bool()
    inv, n, mean, _ = _group_stats(correct.double(), groups)
    return (mean[inv] > 0) & (mean[inv] < 1)


def sequence_advantages(algo: Algorithm, rewards, groups, correct=None, greedy_rewards=None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome-level advantages ``[B]`` and the keep mask ``[B]`` (sample filter and the
    estimator's own filter: PSR keeps correct samples, NSR wrong ones). Dropped samples get 0.

    ``correct`` defaults to ``rewards > 0``; under spurious rewards pass what should count as a
    positive sample. ``greedy_rewards[b]`` (ReMax) is the reward of the greedy rollout of sample
    ``b``'s prompt. Token-level estimators (gae, reinforce_pp) go through :func:`token_advantages`.
    """
    r = torch.as_tensor(rewards, dtype=torch.float64)
    groups = torch.as_tensor(groups)
    correct = r > 0 if correct is None else torch.as_tensor(correct).bool()
    keep = filter_keep(algo.sample_filter, groups, correct)
    kind = algo.advantage
    if kind in TOKEN_LEVEL_ADVANTAGES:
        raise ValueError(f"{kind} is a token-level estimator: use token_advantages")
    if kind in ("grpo", "dr_grpo", "group_mean", "rloo"):
        inv, n, mean, dev2 = _group_stats(r, groups)
        centred = r - mean[inv]
        if kind == "grpo":
            std = (dev2 / (n - 1).clamp(min=1)).sqrt()
            adv = centred / (std[inv] + STD_EPS)
        elif kind == "rloo":  # r_i - (S - r_i)/(n - 1) == n/(n - 1) * (r_i - mean)
            adv = centred * n[inv] / (n[inv] - 1).clamp(min=1)
        else:
            adv = centred
    elif kind == "remax":
        if greedy_rewards is None:
            raise ValueError("remax needs greedy_rewards (the greedy rollout's reward per sample)")
        adv = r - torch.as_tensor(greedy_rewards, dtype=torch.float64)
    elif kind == "psr":
        adv, keep = r, keep & correct
    elif kind == "nsr":
        adv, keep = torch.full_like(r, -1.0), keep & ~correct
    elif kind == "w_reinforce":
        adv = torch.where(correct, algo.lam * r, torch.full_like(r, -1.0))
    else:  # pragma: no cover - guarded by Algorithm.__post_init__
        raise ValueError(kind)
    return torch.where(keep, adv, torch.zeros_like(adv)).float(), keep


# -- token-level estimators --------------------------------------------------------------------


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / sqrt(var + 1e-8)`` over the masked entries (population variance); 0 off
    the mask."""
    m = mask.to(x.dtype)
    count = m.sum().clamp(min=1)
    mean = (x * m).sum() / count
    var = (((x - mean) * m) ** 2).sum() / count
    return (x - mean) * torch.rsqrt(var + WHITEN_EPS) * m


def outcome_token_rewards(rewards, mask: torch.Tensor, kl: torch.Tensor | None = None,
                          kl_coef: float = 0.0) -> torch.Tensor:
    """Per-token rewards ``[B, T]``: ``-kl_coef * kl`` on every response token plus the outcome
    reward on each row's last response token (rows without response tokens get nothing)."""
    m = mask.float()
    r = torch.as_tensor(rewards, dtype=torch.float32, device=m.device)
    T = m.shape[1]
    last = (m * torch.arange(1, T + 1, device=m.device)).argmax(dim=1)
    out = torch.zeros_like(m)
    has = m.sum(1) > 0
    out[has, last[has]] = r[has]
    if kl is not None and kl_coef:
        out = out - kl_coef * kl.float() * m
    return out


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0
                       ) -> torch.Tensor:
    """``G_t = sum_{i >= t} gamma^(i-t) r_i`` over each row's masked positions."""
    m = mask.to(token_rewards.dtype)
    out = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for t in range(token_rewards.shape[1] - 1, -1, -1):
        running = (token_rewards[:, t] + gamma * running) * m[:, t]
        out[:, t] = running
    return out


def gae_advantages(token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                   gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) along each row's response.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V = 0`` after the last response token,
    ``A_t = delta_t + gamma * lam * A_{t+1}``; returns ``(A, A + V)``, both 0 off the mask.
    Response positions must be one contiguous run per row (as :mod:`sequences` makes them).
    """
    m = mask.float()
    values = values.detach().float() * m
    adv = torch.zeros_like(values)
    next_adv = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in range(values.shape[1] - 1, -1, -1):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * m[:, t]
        adv[:, t] = next_adv
        next_value = values[:, t]
    return adv, (adv + values) * m


def reinforce_pp_advantages(rewards, mask: torch.Tensor, kl: torch.Tensor | None = None,
                            kl_coef: float = 0.0, gamma: float = 1.0
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu 2025): per-token rewards ``-kl_coef * kl_t`` plus the outcome at the last
    token, returns ``G_t`` (discount ``gamma``), advantages = returns whitened over all valid
    tokens of the batch. Returns ``(advantages, returns)``."""
    returns = discounted_returns(outcome_token_rewards(rewards, mask, kl, kl_coef), mask, gamma)
    return masked_whiten(returns, mask), returns


def token_advantages(algo: Algorithm, rewards, mask: torch.Tensor,
                     values: torch.Tensor | None = None, token_kl: torch.Tensor | None = None,
                     kl_coef: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level estimators on the ``[B, T]`` response ``mask``: ``(advantages, returns)``.

    ``gae`` (PPO): outcome reward on the last token (minus ``kl_coef * token_kl`` per token when
    given), GAE with the algorithm's gamma / lambda over ``values`` (the value head at the same
    positions), whitened if ``algo.whiten``; returns are the value targets. ``reinforce_pp``:
    see :func:`reinforce_pp_advantages`. ``token_kl`` is ``kl_estimate(old_logp, ref_logp,
    "k1")``; ``kl_coef`` None means ``algo.kl_coef`` if ``algo.kl_in_reward`` else 0. Pass only
    the kept samples (or a mask already multiplied by ``keep``).
    """
    mask = mask.bool()
    beta = (algo.kl_coef if algo.kl_in_reward else 0.0) if kl_coef is None else kl_coef
    if beta and token_kl is None:
        raise ValueError(f"{algo.name}: a KL penalty in the reward needs token_kl")
    if algo.advantage == "gae":
        if values is None:
            raise ValueError(f"{algo.name}: GAE needs the value head's values")
        token_r = outcome_token_rewards(rewards, mask, token_kl, beta)
        adv, returns = gae_advantages(token_r, values, mask, algo.gae_gamma, algo.gae_lambda)
        return (masked_whiten(adv, mask) if algo.whiten else adv), returns
    if algo.advantage == "reinforce_pp":
        return reinforce_pp_advantages(rewards, mask, token_kl, beta, algo.gae_gamma)
    raise ValueError(f"{algo.advantage} is an outcome-level estimator: use sequence_advantages")


class Advantages(NamedTuple):
    advantages: torch.Tensor
    """``[B, T]`` per-token advantages, 0 off the mask and on dropped samples."""
    keep: torch.Tensor
    """``[B]`` bool: samples that stay in the loss (multiply the loss mask by it)."""
    returns: torch.Tensor | None
    """``[B, T]`` value targets (PPO) or returns (REINFORCE++); None for outcome estimators."""


def compute_advantages(algo: Algorithm, rewards, groups, mask: torch.Tensor, correct=None,
                       greedy_rewards=None, values: torch.Tensor | None = None,
                       kl: torch.Tensor | None = None) -> Advantages:
    """Advantages of any estimator on the ``[B, T]`` response ``mask``, with the keep mask: one
    call for :func:`sequence_advantages` (broadcast on the mask) or :func:`token_advantages`
    (computed on the kept samples only). ``kl`` is ``token_kl`` of the latter."""
    mask = mask.bool()
    r = torch.as_tensor(rewards, dtype=torch.float32)
    correct = r > 0 if correct is None else torch.as_tensor(correct).bool()
    if algo.advantage not in TOKEN_LEVEL_ADVANTAGES:
        adv, keep = sequence_advantages(algo, r, groups, correct, greedy_rewards)
        adv = adv.to(mask.device)
        return Advantages(adv[:, None] * mask, keep.to(mask.device), None)
    keep = filter_keep(algo.sample_filter, groups, correct).to(mask.device)
    adv, returns = token_advantages(algo, r, mask & keep[:, None], values, kl)
    return Advantages(adv, keep, returns)


def shape_rewards(algo: Algorithm, rewards, lengths, max_tokens: int | None = None
                  ) -> torch.Tensor:
    """Rewards plus the algorithm's overlong penalty (unchanged when it has none)."""
    r = torch.as_tensor(rewards, dtype=torch.float32)
    if algo.overlong is None:
        return r
    max_len, cache_len = algo.overlong.resolve(max_tokens)
    return r + overlong_shaping(lengths, max_len, cache_len, algo.overlong.penalty)


def overlong_shaping(lengths, max_len: int, cache_len: int, penalty: float = 1.0
                     ) -> torch.Tensor:
    """DAPO's soft overlong punishment per response length (see :class:`OverlongShaping`)."""
    L = torch.as_tensor(lengths, dtype=torch.float32)
    if not 0 < cache_len <= max_len:
        raise RlboundError(f"overlong shaping: need 0 < cache_len <= max_len, got "
                           f"{cache_len}, {max_len}")
    start = max_len - cache_len
    return penalty * ((start - L) / cache_len).clamp(min=-1.0, max=0.0)


# -- losses ------------------------------------------------------------------------------------


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled tokens' log-probs (Schulman,
    'Approximating KL divergence', 2020): ``k1 = log(pi/pi_ref)``, ``k2 = k1^2 / 2``,
    ``k3 = pi_ref/pi - 1 - log(pi_ref/pi)`` (unbiased and >= 0; GRPO's)."""
    log_ratio = logp - ref_logp
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio ** 2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r} (k1, k2, k3)")


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str, max_len: int | None = None
              ) -> torch.Tensor:
    """A ``[B, T]`` per-token loss to a scalar (see :attr:`Algorithm.aggregation`).

    ``seq_mean_*`` average over the sequences that have at least one masked token;
    ``seq_mean_token_sum_norm`` divides each sequence's sum by ``max_len`` (default ``T``): keep
    it constant through training (Dr.GRPO uses the generation budget). An empty mask gives 0
    (still attached to the graph).
    """
    m = mask.to(loss.dtype)
    total = (loss * m).sum(dim=1)
    tokens = m.sum(dim=1)
    if mode == "token_mean":
        return total.sum() / tokens.sum().clamp(min=1)
    has = tokens > 0
    n_seq = has.sum().clamp(min=1)
    if mode == "seq_mean_token_mean":
        return (total / tokens.clamp(min=1)).sum() / n_seq
    if mode == "seq_mean_token_sum_norm":
        return total.sum() / (max_len or loss.shape[1]) / n_seq
    raise ValueError(f"unknown aggregation {mode!r}")


def policy_loss(algo: Algorithm, logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor,
                mask: torch.Tensor, ref_logp: torch.Tensor | None = None,
                entropy: torch.Tensor | None = None, max_len: int | None = None, *,
                kl_coef: float | None = None, entropy_coef: float | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate with asymmetric bounds, plus KL and entropy terms, aggregated.

    Per token: ``-min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)`` with
    ``ratio = exp(logp - old_logp)``; ``+ kl_coef * KL(logp, ref_logp)`` when the KL is in the
    loss; ``- entropy_coef * entropy``. ``adv`` is ``[B, T]`` or ``[B]``. ``mask`` should
    already exclude dropped samples. ``kl_coef`` / ``entropy_coef`` override the algorithm's
    (None keeps them; same as ``dataclasses.replace(algo, ...)``). Metrics (floats over
    masked tokens): ``pg_loss``, ``clip_fraction`` (tokens whose clipped branch is active, so
    their gradient is 0), ``clip_fraction_low`` / ``_high``, ``ratio_mean``, ``approx_kl_old``
    (k3 of new vs old), ``kl`` (to the reference, if given), ``entropy`` (if given),
    ``tokens``.
    """
    if adv.dim() == 1:
        adv = adv[:, None].expand_as(logp)
    adv = adv.detach()
    log_ratio = logp - old_logp.detach()
    ratio = torch.exp(log_ratio)
    surr = ratio * adv
    surr_clipped = ratio.clamp(1 - algo.clip_low, 1 + algo.clip_high) * adv
    pg = -torch.minimum(surr, surr_clipped)
    per_token = pg
    kl_coef = algo.kl_coef if kl_coef is None else kl_coef
    entropy_coef = algo.entropy_coef if entropy_coef is None else entropy_coef
    if kl_coef > 0 and not algo.kl_in_reward:
        if ref_logp is None:
            raise ValueError(f"{algo.name}: kl_coef > 0 needs ref_logp")
        per_token = per_token + kl_coef * kl_estimate(logp, ref_logp.detach(), algo.kl_estimator)
    if entropy_coef > 0:
        if entropy is None:
            raise ValueError(f"{algo.name}: entropy_coef > 0 needs the per-token entropy")
        per_token = per_token - entropy_coef * entropy
    loss = aggregate(per_token, mask, algo.aggregation, max_len)

    with torch.no_grad():
        m = mask.bool()
        n = max(int(m.sum()), 1)

        def mean(x: torch.Tensor) -> float:
            return float((x.float() * m).sum() / n)

        high = (ratio > 1 + algo.clip_high) & (adv > 0)
        low = (ratio < 1 - algo.clip_low) & (adv < 0)
        metrics = {
            "pg_loss": float(aggregate(pg, mask, algo.aggregation, max_len)),
            "clip_fraction": mean(high | low),
            "clip_fraction_high": mean(high),
            "clip_fraction_low": mean(low),
            "ratio_mean": mean(ratio),
            "approx_kl_old": mean(kl_estimate(logp, old_logp, "k3")),
            "tokens": float(m.sum()),
        }
        if ref_logp is not None:
            metrics["kl"] = mean(kl_estimate(logp, ref_logp, algo.kl_estimator))
        if entropy is not None:
            metrics["entropy"] = mean(entropy)
    return loss, metrics


def value_loss(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               old_values: torch.Tensor | None = None, clip: float | None = 0.2) -> torch.Tensor:
    """PPO's value loss, token mean over the mask: ``0.5 * (V - R)^2``, or with ``old_values``
    and ``clip`` the pessimistic clipped form ``0.5 * max((V - R)^2, (V_clip - R)^2)`` where
    ``V_clip = V_old + clamp(V - V_old, -clip, clip)``."""
    returns = returns.detach()
    err = (values - returns) ** 2
    if old_values is not None and clip is not None:
        old = old_values.detach()
        clipped = old + (values - old).clamp(-clip, clip)
        err = torch.maximum(err, (clipped - returns) ** 2)
    return 0.5 * aggregate(err, mask, "token_mean")
