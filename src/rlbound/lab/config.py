"""The lab's typed configuration: every knob, the presets, and TOML in and out.

A :class:`LabConfig` has one section per concern (``world``, ``base_corpus``, ``teacher_corpus``,
``model``, ``pretrain``, ``teacher_pretrain``, ``distill``, ``self_train``, ``rl``, ``sampling``). Each
field carries its help text, which :func:`config_toml` writes as comments, so
``rlbound lab config > lab.toml`` gives a file a user can edit and pass back with ``--config``.

Presets (:data:`PRESETS`): ``quick`` (the test suite's: under 3 minutes on 2 cores, n = 64),
``default`` (the README's main command: under 15 minutes, n = 256, GRPO and DSRL) and ``full``
(3x longer pretraining, the teacher from scratch, 100 test problems per family, every RL algorithm with 3
seeds, and a learning-rate sweep of NSR and W-REINFORCE). A config file overrides a preset key by key; unknown
sections or keys and wrongly typed values are one-line errors naming the file and the key.

What it does not do: run anything (see :mod:`rlbound.lab.pipeline`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rlbound.errors import RlboundError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["LabConfig", "PRESETS", "config_toml", "load_config", "preset"]


def knob(default: Any, help: str) -> Any:
    """A dataclass field with help text (mutable defaults are copied per instance)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata={"help": help})
    return field(default=default, metadata={"help": help})


class _Section:
    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WorldConfig(_Section):
    """The problems: which families, how hard, and how many held-out test problems."""

    seed: int = knob(0, "Seed of every problem the world draws (train and test).")
    countdown_difficulty: int = knob(2, "Countdown level 1-5: 1 = 3 numbers <= 10, 2 = 4 numbers <= 10, "
                                        "3 = 4 numbers <= 25, 4 = 5 numbers <= 25, 5 = 5 numbers <= 50.")
    tree_share: float = knob(0.3, "Share of countdown problems (train and test) whose every solution "
                                  "combines two partial results (class 'tree'); the rest are 'chain'.")
    programs_difficulties: list = knob([1, 2, 3], "Programs difficulties drawn uniformly (d -> d+1 statements; "
                                                  "<= 3 statements is class 'short', more is 'long').")
    test_problems: int = knob(200, "Held-out test problems per family (at 200 a difference of a few solved "
                                     "problems can be told from noise; 30 was the default before).")


@dataclass(frozen=True)
class CorpusConfig(_Section):
    """A pretraining corpus: problems, the strategies that write their traces, and their errors."""

    problems: int = knob(4000, "Distinct training problems (split between families by family_shares).")
    traces_per_problem: int = knob(4, "Traces written per problem, each by a strategy drawn by its share.")
    family_shares: dict = knob({"countdown": 0.5, "programs": 0.5}, "Share of problems per family.")
    strategy_shares: dict = knob(
        {"chain": 1.0, "search": 0.0, "stepwise": 0.8, "direct": 0.2},
        "Share of each strategy within its family: countdown chain/search, programs stepwise/direct.",
    )
    solves: dict = knob(
        {"chain": ["chain"], "search": ["chain", "tree"], "stepwise": ["short", "long"], "direct": ["short"]},
        "Problem classes each strategy solves in this corpus; elsewhere it writes a failed attempt.",
    )
    error_rate: float = knob(0.02, "Probability that a written step is wrong (a wrong step makes the answer wrong).")
    max_dead_ends: int = knob(1, "Most failed attempts a search trace shows before its solution.")
    seed: int = knob(0, "Seed of the strategy choices and trace details.")


@dataclass(frozen=True)
class ModelConfig(_Section):
    """Shape of the tiny Llama-style transformer (character tokenizer, 99 tokens)."""

    d_model: int = knob(128, "Residual width.")
    n_layers: int = knob(4, "Transformer blocks.")
    n_heads: int = knob(4, "Attention heads.")
    d_ff: int = knob(384, "SwiGLU hidden width.")
    max_seq_len: int = knob(256, "Longest prompt + completion in characters.")
    dtype: str = knob("auto", "Number format of every training and sampling stage: auto (bfloat16 where the CPU "
                              "multiplies it in hardware, else float32), float32 or bfloat16. Samples differ with it.")

    def shape(self) -> dict[str, Any]:
        """The knobs of the network's shape (what :class:`rlbound.engines.tiny.model.TinyConfig` takes)."""
        return {k: v for k, v in self.as_dict().items() if k != "dtype"}


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Next-token pretraining from scratch: AdamW, linear warm-up then cosine decay."""

    steps: int = knob(600, "Optimiser steps.")
    batch_size: int = knob(64, "Traces per step.")
    lr: float = knob(3e-3, "Peak learning rate.")
    warmup: int = knob(50, "Warm-up steps.")
    checkpoint_every: int = knob(100, "Steps between checkpoints (an interrupted run resumes from the last).")
    seed: int = knob(0, "Initialisation and data-order seed.")
    init: str = knob("scratch", "Start from 'scratch' (random weights) or from the trained 'base' model "
                                "(teacher only: continued pretraining on its own corpus).")
    compile: bool = knob(True, "Compile the forward pass with torch.compile (needs a C++ compiler): in bfloat16 "
                               "about 1.8x the eager steps/s after a 20-50 s compilation (600 steps: 1.3x, the "
                               "compilation included), so it pays from a few hundred steps. Rounding differs from eager.")


@dataclass(frozen=True)
class FinetuneConfig(_Section):
    """Fine-tuning the base model on verified-correct samples of fresh training problems."""

    enabled: bool = knob(True, "Build this model.")
    problems: int = knob(300, "Fresh training problems per family sampled for fine-tuning data.")
    samples: int = knob(16, "Samples per problem; the verified-correct ones become training data.")
    temperature: float = knob(1.0, "Sampling temperature of those samples.")
    steps: int = knob(100, "Fine-tuning steps.")
    batch_size: int = knob(64, "Examples per step.")
    lr: float = knob(3e-4, "Peak learning rate.")
    warmup: int = knob(10, "Warm-up steps.")


@dataclass(frozen=True)
class RLConfig(_Section):
    """RL training on fresh training problems of both families: one model per start, algorithm and seed."""

    algorithms: list = knob(["grpo", "dsrl"], "Algorithms to train, each from every model of rl.start (rlbound "
                                             "train --help lists the names; 'dsrl' is NSR-PreRL then GRPO).")
    start: list = knob(["base"], "Models the RL runs start from: 'base' and/or 'distilled' (imitation, then RL; "
                                 "needs distill.enabled). Labels: 'grpo' from the base model, 'distilled+grpo' "
                                 "from the distilled one.")
    seeds: int = knob(1, "RL runs per algorithm and start, seed s training with rl.seed + s (labels 'grpo', "
                         "'grpo@s1', ...); the report compares the spread between algorithms with the spread "
                         "between seeds.")
    lr_sweep: dict = knob({}, "Extra RL models at other learning rates, algorithm -> list of rates, e.g. "
                              "{ nsr = [1e-5, 3e-5] }: labels like 'nsr@lr3e-05', from the base model, seed "
                              "rl.seed only (a rate equal to rl.lr is the algorithm's own model).")
    families: list = knob(["countdown", "programs"], "Families whose training problems the rollouts draw from "
                                                     "(every model is still evaluated on both).")
    problems: int = knob(300, "Fresh training problems per family the rollouts draw from.")
    steps: int = knob(30, "Policy updates per algorithm.")
    prompts_per_step: int = knob(16, "Problems per rollout batch, drawn from all the families' problems.")
    group_size: int = knob(8, "Samples per problem (the group of GRPO, RLOO, DAPO, ...).")
    lr: float = knob(1e-4, "AdamW learning rate (one for every algorithm, so they are compared at equal step size).")
    max_tokens: int = knob(160, "Longest rollout response in characters.")
    dsrl_switch: int = knob(10, "DSRL: steps of NSR-PreRL before it switches to GRPO.")
    reward: str = knob("correct", "Reward: correct, random, inverse, format_only, or incorrect_label "
                                        "(pays the base model's most frequent wrong answer).")
    check_problems: int = knob(50, "RL training problems per family on which the base and every RL model are "
                                   "re-sampled after training (training-set pass@1: did RL learn?).")
    check_samples: int = knob(8, "Samples per problem of that check.")
    trainer: dict = knob({}, "Any other trainer knob by name, e.g. { kl_coef = 0.01, updates_per_batch = 2 } "
                             "(see rlbound.train.config.TrainerConfig).")
    seed: int = knob(0, "Seed of the problem order and the rollouts.")


@dataclass(frozen=True)
class SamplingConfig(_Section):
    """How every model is evaluated on the test problems."""

    n: int = knob(256, "Samples per test problem (pass@k up to k = n).")
    temperature: float = knob(1.0, "Sampling temperature.")
    max_tokens: int = knob(200, "Longest completion in characters.")
    seed: int = knob(0, "Sampling seed.")


def _teacher_corpus() -> dict:
    return {"strategy_shares": {"chain": 0.0, "search": 1.0, "stepwise": 1.0, "direct": 0.0}}


@dataclass(frozen=True)
class LabConfig:
    """Every knob of a lab run."""

    world: WorldConfig = field(default_factory=WorldConfig)
    base_corpus: CorpusConfig = field(default_factory=CorpusConfig)
    teacher_corpus: CorpusConfig = field(default_factory=lambda: CorpusConfig(**_teacher_corpus()))
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: TrainConfig = field(default_factory=TrainConfig)
    # 600 steps: at 300 (lr 1e-3 or 3e-3, or a corpus half chain traces) the teacher's countdown pass@1
    # stayed 0.001-0.002 below the base model's in the default run, its chain skill worn by search traces
    teacher_pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(steps=600, warmup=20, lr=1e-3, init="base"))
    distill: FinetuneConfig = field(default_factory=FinetuneConfig)
    self_train: FinetuneConfig = field(default_factory=FinetuneConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: asdict(getattr(self, f.name)) for f in fields(self)}


SECTION_HELP = {
    "world": "The problems both families draw, and the held-out test set.",
    "base_corpus": "The base model's pretraining corpus (by default the search strategy is held out).",
    "teacher_corpus": "The teacher's corpus: the same problems, written by search and stepwise traces.",
    "model": "Shape of every tiny model in the lab.",
    "pretrain": "Pretraining of the base model on base_corpus.",
    "teacher_pretrain": "Training of the teacher on teacher_corpus (by default continued from the base model).",
    "distill": "Distillation: the base model fine-tuned on the teacher's verified-correct samples.",
    "self_train": "Self-training (rejection-sampling fine-tuning, STaR / RAFT): the base model fine-tuned "
                  "on its own verified-correct samples.",
    "rl": "RL with verifiable rewards: the base (or distilled) model trained by each algorithm on fresh training "
          "problems, with one or more seeds.",
    "sampling": "Evaluation of every model on the test problems.",
}


def _with(config: LabConfig, overrides: dict[str, dict[str, Any]]) -> LabConfig:
    return replace(config, **{name: replace(getattr(config, name), **values)
                              for name, values in overrides.items()})


def preset(name: str) -> LabConfig:
    """The preset ``name`` (``quick``, ``default`` or ``full``)."""
    if name not in PRESETS:
        raise RlboundError(f"unknown lab preset {name!r}; choose from {', '.join(PRESETS)}")
    return _with(LabConfig(), PRESETS[name])


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "world": {"test_problems": 10},
        "base_corpus": {"problems": 1500},
        "teacher_corpus": {"problems": 1500},
        "pretrain": {"steps": 180, "checkpoint_every": 60, "compile": False},
        "teacher_pretrain": {"steps": 60, "checkpoint_every": 30, "compile": False},
        "distill": {"problems": 100, "samples": 4, "steps": 20},
        "self_train": {"problems": 100, "samples": 4, "steps": 20},
        "rl": {"algorithms": ["grpo"], "families": ["programs"], "problems": 100, "steps": 20, "group_size": 4, "lr": 3e-4,
               "check_problems": 100},
        "sampling": {"n": 64, "max_tokens": 160},
    },
    "default": {},
    "full": {
        "world": {"test_problems": 100},
        "base_corpus": {"problems": 12000},
        "teacher_corpus": {"problems": 12000},
        "pretrain": {"steps": 1800},
        "teacher_pretrain": {"steps": 1500, "lr": 3e-3, "warmup": 50, "init": "scratch"},
        "distill": {"problems": 1000, "steps": 300},
        "self_train": {"problems": 1000, "steps": 300},
        "rl": {"algorithms": ["ppo", "grpo", "dr_grpo", "rloo", "reinforce_pp", "remax", "dapo", "psr", "nsr",
                              "w_reinforce", "prerl", "nsr_prerl", "psr_prerl", "dsrl"],
               "problems": 1000, "seeds": 3,
               "lr_sweep": {"nsr": [1e-5, 3e-5, 1e-4], "w_reinforce": [1e-5, 3e-5, 1e-4]}},
    },
}


# ------------------------------------------------------------------------------------ TOML


def _type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default))


def apply_overrides(config: LabConfig, data: dict[str, Any], where: str) -> LabConfig:
    """``config`` with the sections and keys of ``data`` replaced; errors name ``where`` and the key."""
    overrides: dict[str, dict[str, Any]] = {}
    sections = {f.name for f in fields(LabConfig)}
    for name, values in data.items():
        if name not in sections:
            raise RlboundError(f"{where}: unknown section [{name}]; sections are {', '.join(sorted(sections))}")
        if not isinstance(values, dict):
            raise RlboundError(f"{where}: [{name}] must be a table of keys")
        current = getattr(config, name)
        known = {f.name for f in fields(current)}
        overrides[name] = {}
        for key, value in values.items():
            if key not in known:
                raise RlboundError(f"{where}: unknown key {key!r} in [{name}]; keys are {', '.join(sorted(known))}")
            default = getattr(current, key)
            if not _type_ok(value, default):
                raise RlboundError(f"{where}: [{name}] {key} must be a {type(default).__name__}, got {value!r}")
            if isinstance(default, float):
                value = float(value)
            elif isinstance(default, dict):
                value = {**default, **value}  # a partial table changes only the keys it names
            overrides[name][key] = value
    return _with(config, overrides)


def load_config(preset_name: str = "default", path: str | Path | None = None) -> LabConfig:
    """The preset, overridden by the TOML file at ``path`` if given."""
    config = preset(preset_name)
    if path is None:
        return config
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RlboundError(f"config file '{path}' not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise RlboundError(f"config file '{path}': {exc}") from None
    return apply_overrides(config, data, f"config file '{path}'")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def config_toml(config: LabConfig, title: str = "") -> str:
    """``config`` as a commented TOML file that :func:`load_config` reads back to the same config."""
    lines = [f"# {title}" if title else "# rlbound lab configuration",
             "# Edit and pass with: rlbound lab run --config FILE (keys left out keep the preset's value).", ""]
    for section in fields(LabConfig):
        value = getattr(config, section.name)
        lines.append(f"# {SECTION_HELP[section.name]}")
        lines.append(f"[{section.name}]")
        for f in fields(value):
            lines.append(f"# {f.metadata['help']}")
            lines.append(f"{f.name} = {_toml_value(getattr(value, f.name))}")
        lines.append("")
    return "\n".join(lines)
