"""The built-in study: the whole measurement spine on a CPU in minutes, no downloads.

It asks the product's question of two tiny models it makes itself:

1. **base**: the built-in tiny transformer fitted on arithmetic solution traces
   (:func:`rlbound.engines.tiny.train.fit_arithmetic_model`);
2. **self-trained**: the base model fine-tuned on its *own verified-correct* samples of
   training problems (rejection-sampling fine-tuning / expert iteration: STaR, Zelikman et al.
   2022; RAFT, Dong et al. 2023). It is on-policy improvement from a binary verifiable reward,
   the simplest relative of RLVR, and stands in for it until the trainer lands.

Both models are sampled at ``n`` completions per held-out problem, verified, stored, and compared
in ``report/report.html``. Every stage is resumable: models and runs already present are reused,
and a run interrupted mid-way is topped up. The study directory records its settings in
``study.json``; rerunning with other settings is refused (use another directory).

It does not build the full lab world (several task families, strategies, distillation) nor run
the RL algorithms: those come with the lab and trainer.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rlbound.atomic import atomic_write_text
from rlbound.engines.base import SamplingParams, load_engine
from rlbound.errors import RlboundError
from rlbound.report.html import write_report
from rlbound.sampler import sample_run
from rlbound.store import config_difference, load_run
from rlbound.tasks.synthetic import arithmetic_task
from rlbound.verify.base import load_verifier


SELF_TRAIN_OFFSET = 2_000_000
"""Self-training problems start here: away from the base model's fitting problems (from
``ARITH_TRAIN_OFFSET``) and the held-out test problems (from 0)."""


@dataclass(frozen=True)
class StudyConfig:
    """Sizes of the built-in study (``quick`` is the test suite's, the default the README's)."""

    difficulty: int = 3
    seed: int = 0
    base_steps: int = 600
    """Optimiser steps fitting the base model on solution traces."""
    rft_problems: int = 1500
    """Training problems the base model samples for self-training."""
    rft_samples: int = 4
    """Samples per training problem; the verified-correct ones become fine-tuning data."""
    rft_steps: int = 100
    """Fine-tuning steps of 64 examples: about one pass over the correct samples."""
    rft_lr: float = 3e-4
    test_problems: int = 200
    n: int = 64
    """Samples per held-out problem for pass@k."""
    temperature: float = 1.0
    max_tokens: int = 128

    @classmethod
    def quick(cls) -> "StudyConfig":
        return cls(base_steps=450, rft_problems=300, rft_samples=4, rft_steps=30,
                   test_problems=30, n=16)


def _check_settings(out: Path, config: StudyConfig) -> None:
    record = out / "study.json"
    wanted = asdict(config)
    if record.exists():
        diff = config_difference(json.loads(record.read_text()), wanted)
        if diff:
            raise RlboundError(f"study '{out}' was made with other settings ({diff}); use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps(wanted, indent=2) + "\n")


def _build_model(target: Path, build) -> None:
    """Run ``build(tmp_dir)`` unless ``target`` exists; publish the result by renaming."""
    if (target / "config.json").exists():
        return
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    tmp.rename(target)


def run_study(out: str | Path, quick: bool = False) -> Path:
    """Run (or resume) the study in ``out``; return the path of its report.html."""
    from rlbound.engines.tiny.train import fit_arithmetic_model, train_next_token
    from rlbound.tasks.templates import get_template

    out = Path(out)
    config = StudyConfig.quick() if quick else StudyConfig()
    _check_settings(out, config)
    verifier = load_verifier("exact")
    params = SamplingParams(temperature=config.temperature, max_tokens=config.max_tokens)
    base_dir, tuned_dir = out / "models" / "base", out / "models" / "self-trained"
    test_task = arithmetic_task(n=config.test_problems, seed=config.seed, difficulty=config.difficulty)

    _build_model(
        base_dir,
        lambda tmp: fit_arithmetic_model(
            tmp, difficulty=config.difficulty, steps=config.base_steps, seed=config.seed, eval_n=0
        ),
    )

    def self_train(tmp: Path) -> None:
        # Fresh training problems (not those the base model was fitted on), none equal to a test one.
        test_prompts = {p.prompt for p in test_task.problems}
        train_task = arithmetic_task(
            n=config.rft_problems, seed=config.seed, difficulty=config.difficulty,
            offset=SELF_TRAIN_OFFSET,
        )
        train_task = replace(
            train_task, problems=tuple(p for p in train_task.problems if p.prompt not in test_prompts)
        )
        run_dir = out / "runs" / "base-on-train"
        sample_run(run_dir, train_task, load_engine("tiny", str(base_dir)), verifier, params,
                   config.rft_samples, seed=config.seed + 1, label="base on training problems")
        template = get_template(train_task.template)
        prompts = {p.id: template.render(p.prompt) for p in train_task.problems}
        pairs = [
            (prompts[row["problem_id"]], row["completion"])
            for row in load_run(run_dir).table.to_pylist()
            if row["correct"] and row["finish_reason"] == "stop"
        ]
        if not pairs:
            raise RlboundError("the base model solved no training problem; raise base_steps")
        train_next_token(str(base_dir), pairs, steps=config.rft_steps, lr=config.rft_lr, warmup=10,
                         seed=config.seed, out_dir=tmp, description="self-training")

    _build_model(tuned_dir, self_train)

    runs = []
    for name, model_dir in (("base", base_dir), ("self-trained", tuned_dir)):
        run_dir = out / "runs" / name
        sample_run(run_dir, test_task, load_engine("tiny", str(model_dir)), verifier, params,
                   config.n, seed=config.seed, label=name)
        runs.append(load_run(run_dir).samples)
    return write_report(runs, out / "report", title="rlbound built-in study: base vs self-trained")
