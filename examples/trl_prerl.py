#!/usr/bin/env python3
"""PreRL, NSR-PreRL, PSR-PreRL or DSRL with TRL (RL on log P(y), prompt dropped), then measure.

    pip install "trl==1.16.0"
    python examples/trl_prerl.py --algo dsrl --dsrl-switch 50 --model Qwen/Qwen2.5-Math-1.5B \\
        --task math_train.jsonl --out runs/dsrl --steps 200 --use-vllm
    rlbound sample --task math500 --engine vllm --model runs/dsrl/checkpoint-200 -n 256 --out runs/dsrl-math500
    rlbound report runs/base-math500 runs/dsrl-math500 --out reports/dsrl

Tan et al. 2026, "From P(y|x) to P(y)" (arXiv 2604.14142): the trainer is
rlbound.integrations.trl_prerl.PreRLTrainer, the same algorithms (rows, advantages, sample
filters, DSRL switch) as `rlbound train --algo prerl|nsr_prerl|psr_prerl|dsrl`. For a model whose
tokenizer has no BOS token (Qwen), pass --bos-token-id (e.g. the id of <|endoftext|>).
CPU smoke run on a tiny model:
    python examples/trl_prerl.py --algo nsr_prerl --model DIR --task arithmetic -O n=8 \\
        -O difficulty=1 --steps 2 --max-completion-length 16 --out /tmp/prerl
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trl_grpo_math import build_parser, config_options, load_rows  # noqa: E402


def main() -> None:
    parser = build_parser(__doc__.splitlines()[1])
    parser.add_argument("--algo", default="prerl", choices=["prerl", "nsr_prerl", "psr_prerl", "dsrl"])
    parser.add_argument("--dsrl-switch", type=int, default=10, help="DSRL: NSR-PreRL steps before GRPO")
    parser.add_argument("--bos-token-id", type=int, default=None, help="token starting a prompt-free row")
    args = parser.parse_args()
    from datasets import Dataset

    from rlbound.integrations.trl import verifier_reward
    from rlbound.integrations.trl_prerl import PreRLConfig, PreRLTrainer

    rows, verifier = load_rows(args)
    reward = verifier_reward(verifier, answer_field="answer", reward=args.reward)
    config = PreRLConfig(algo=args.algo, dsrl_switch=args.dsrl_switch, prerl_bos_token_id=args.bos_token_id,
                         **config_options(args))
    trainer = PreRLTrainer(model=args.model, reward_funcs=[reward], args=config,
                           train_dataset=Dataset.from_list(rows))
    trainer.train()
    trainer.save_model(args.out)
    print(f"trained {args.algo}; verdict statuses seen: {dict(reward.status_counts)}")


if __name__ == "__main__":
    main()
