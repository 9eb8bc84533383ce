"""The lab's speed: pretraining tokens/s, sampling tokens/s, and the wall time of every stage.

Run by hand (not part of the tests), on an otherwise idle machine::

    rlbound lab run --out runs/lab                 # the default preset (about 15 minutes)
    python bench/bench_lab.py --lab runs/lab       # stage times from its lab.json + fresh timings

It prints:

* the wall time of each stage of that lab run (from ``lab.json``; a stage reused from the cache
  shows the time it took when it was built);
* pretraining throughput: ``--steps`` optimiser steps of a fresh default-shape model on the lab's
  base corpus, in characters (= tokens, the tokenizer is per character) per second;
* sampling throughput: the lab's base model sampling ``--n`` completions for each of
  ``--problems`` countdown and programs test problems at temperature 1, in generated tokens per
  second (tokens actually produced, EOS included).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rlbound.engines.base import SamplingParams, sample_seed
from rlbound.engines.precision import dtype_name, resolve_dtype
from rlbound.engines.tiny import TinyEngine
from rlbound.engines.tiny.model import TinyConfig
from rlbound.engines.tiny.train import train_next_token
from rlbound.lab.config import WorldConfig
from rlbound.lab.corpus import FAMILIES, lab_task
from rlbound.lab.pipeline import read_corpus, trained_tokens
from rlbound.progress import set_quiet
from rlbound.tasks.templates import get_template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", type=Path, required=True, help="a finished lab directory (lab.json)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--problems", type=int, default=10)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--decode", default="auto", choices=["auto", "fused", "eager"],
                        help="the tiny engine's decoding mode (eager: torch operations, as before the fused kernels)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_quiet(True)
    record = json.loads((args.lab / "lab.json").read_text())

    print(f"stages of {args.lab} (preset {record['preset']}):")
    total = 0.0
    for stage in record["stages"]:
        total += stage["wall_s"]
        print(f"  {stage['name']:<28} {stage['wall_s']:8.1f} s{'  (cached)' if stage['cached'] else ''}")
    print(f"  {'total':<28} {total:8.1f} s")
    plan = record.get("schedule")
    if plan and plan["built"]:  # lab directories written before the stage graph have none
        print(f"  the {plan['built']} stages built in that run: {plan['wall_s']:.1f} s from first to last with "
              f"{plan['workers']} worker(s), {plan['stage_s'] / max(plan['wall_s'], 1e-9):.2f}x their own times added up")

    batch_size = record["config"]["pretrain"]["batch_size"]
    corpus_stage = next(s for s in record["stages"] if s["name"] == "corpus-base")
    pairs = read_corpus(corpus_stage["path"])
    model = dict(record["config"]["model"])
    dtype = dtype_name(resolve_dtype(model.pop("dtype", "float32")))  # (lab.json before the knob: float32)
    t0 = time.perf_counter()
    result = train_next_token(TinyConfig(**model), pairs, steps=args.steps, batch_size=batch_size, seed=0, dtype=dtype)
    wall = time.perf_counter() - t0
    tokens = trained_tokens(pairs, batch_size, result.steps)
    print(f"pretraining (eager, {dtype}): {args.steps} steps of {batch_size} in {wall:.1f} s: "
          f"{tokens / wall:,.0f} tokens/s ({args.steps / wall:.2f} steps/s, {torch.get_num_threads()} threads)")

    engine = TinyEngine(record["models"]["base"], dtype=dtype, decode=args.decode)
    params = SamplingParams(temperature=1.0, max_tokens=record["config"]["sampling"]["max_tokens"])
    template = get_template("plain")
    world = WorldConfig(**record["config"]["world"])
    for family in FAMILIES:
        problems = lab_task(family, world, args.problems).problems
        prompts = [template.render(p.prompt) for p in problems]
        seeds = [[sample_seed(0, p.id, j) for j in range(args.n)] for p in problems]
        t0 = time.perf_counter()
        outputs = engine.generate(prompts, params, seeds)
        wall = time.perf_counter() - t0
        tokens = sum(len(s.token_ids) for samples in outputs for s in samples)
        print(f"sampling {family} ({engine.decode}): {len(problems)} problems x {args.n} in {wall:.1f} s: "
              f"{tokens / wall:,.0f} tokens/s, {len(problems) * args.n / wall:,.0f} samples/s")


if __name__ == "__main__":
    main()
