#!/usr/bin/env python3
"""Train with TRL's GRPOTrainer on rlbound's verifier, then measure the checkpoints with rlbound.

    pip install "trl==1.16.0"
    python examples/trl_grpo_math.py --model Qwen/Qwen2.5-Math-1.5B --task math_train.jsonl \\
        --out runs/grpo --steps 200 --use-vllm            # a GPU box; drop --use-vllm on CPU
    # spurious-reward controls (Shao et al. 2025): --reward random | inverse | format_only
    rlbound sample --task math500 --engine vllm --model runs/grpo/checkpoint-200 -n 256 --out runs/rl
    rlbound report runs/base runs/rl --out reports/grpo

The reward is the task's own verifier (``math`` for maths files and benchmarks) through
rlbound.integrations.trl, and the prompts are the task's template rendered as ``rlbound sample``
renders them, so the reward trained on is the verdict measured. CPU smoke run on a tiny model:
    python examples/trl_grpo_math.py --model DIR --task arithmetic -O n=8 -O difficulty=1 \\
        --steps 2 --max-completion-length 16 --out /tmp/grpo
"""

from __future__ import annotations

import argparse
from pathlib import Path


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, help="model directory or hub name")
    parser.add_argument("--task", required=True, help="an rlbound task or benchmark name, or a JSONL/Parquet file")
    parser.add_argument("-O", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="task option (as for rlbound sample), repeatable")
    parser.add_argument("--template", default=None, help="prompt template (default: the task's)")
    parser.add_argument("--reward", default="correct",
                        choices=["correct", "random", "inverse", "format_only"], help="reward on the verdicts")
    parser.add_argument("--out", required=True, help="output directory (checkpoints)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--num-generations", type=int, default=8, help="samples per prompt (the group)")
    parser.add_argument("--batch-size", type=int, default=8, help="completions per device per step")
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-completion-length", type=int, default=1024)
    parser.add_argument("--save-steps", type=int, default=50)
    parser.add_argument("--use-vllm", action="store_true", help="generate with vLLM (colocated)")
    return parser


def load_rows(args) -> tuple[list[dict], str]:
    from rlbound.integrations.trl import task_rows
    from rlbound.tasks.base import load_task

    options = dict(o.split("=", 1) for o in args.options)
    options = {k: int(v) if v.isdigit() else v for k, v in options.items()}
    if Path(args.task).suffix in (".jsonl", ".json", ".parquet", ".csv", ".gz"):
        task = load_task("file", path=args.task, **options)
    else:
        task = load_task(args.task, **options)
    return task_rows(task, template=args.template), task.verifier


def config_options(args) -> dict:
    import torch

    return dict(output_dir=args.out, max_steps=args.steps, num_generations=args.num_generations,
                per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
                temperature=args.temperature, max_completion_length=args.max_completion_length,
                save_steps=args.save_steps, logging_steps=1, report_to="none", use_vllm=args.use_vllm,
                bf16=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available())


def main() -> None:
    args = build_parser(__doc__.splitlines()[1]).parse_args()
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rlbound.integrations.trl import verifier_reward

    rows, verifier = load_rows(args)
    reward = verifier_reward(verifier, answer_field="answer", reward=args.reward)
    trainer = GRPOTrainer(model=args.model, reward_funcs=[reward], args=GRPOConfig(**config_options(args)),
                          train_dataset=Dataset.from_list(rows))
    trainer.train()
    trainer.save_model(args.out)
    print(f"trained; verdict statuses seen: {dict(reward.status_counts)}")
    print(f"measure it: rlbound sample --task {args.task} --model {args.out} -n 256 --out runs/<name>")


if __name__ == "__main__":
    main()
