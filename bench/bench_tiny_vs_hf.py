"""Sampling throughput: the tiny engine versus transformers' ``generate`` on the same weights.

Run by hand (not part of the tests)::

    python bench/bench_tiny_vs_hf.py                       # random default-size model
    python bench/bench_tiny_vs_hf.py --model runs/lab/base # a trained tiny model directory
    python bench/bench_tiny_vs_hf.py --threads 1 --batch 64 256 --length 64 128

The tiny model is exported with :func:`rlbound.engines.tiny.export.export_hf` and loaded as a
``LlamaForCausalLM`` (so both sides run identical weights). Both sample with temperature 1,
no top-k/top-p, a KV cache, the same batch of token ids (fed directly to ``generate``; prompts of
different lengths left-padded with an attention mask) and the same number of new tokens:

* without ``--model`` the model is random and EOS is ignored on both sides (``min_new_tokens``
  for transformers; the tiny engine's tokenizer is given an EOS id it can never sample), so every
  row produces exactly ``length`` tokens;
* with ``--model`` both stop at EOS (transformers keeps computing finished rows until all are
  done; the tiny engine drops them); tokens/s counts the tokens actually produced.

Workloads: ``one-prompt`` (one prompt, ``batch`` samples: the pass@k case) and ``mixed``
(``batch / 16`` prompts of different lengths, 16 samples each). The best of ``--reps`` runs is
reported, as wall-clock tokens per second.

Each ``--dtypes`` format (default float32 and bfloat16) is timed on both sides, with the tiny
engine's rate also given as a share of this machine's matmul peak in that format (measured first,
a 2048^3 product; the model's FLOPs per token counted from its shape). Training throughput (next-
token steps of a fresh model, batches of 64 rows of ``--train-length`` characters: 100, about the
padded width of the lab's pretraining batches, and 200; ``--train-steps``) is timed per format,
and with ``--train-compile`` also with the forward compiled by ``torch.compile`` (its compilation
not counted).
``--baseline-src DIR`` also times another rlbound's tiny engine and training in float32 in a
subprocess, for side-by-side ratios in one run; ``--rounds R`` alternates the two R times and
reports medians with the range of the per-round ratios (this machine's speed drifts by tens of
per cent between blocks of runs), e.g. the code before a change::

    git worktree add /tmp/before <commit>
    python bench/bench_tiny_vs_hf.py --baseline-src /tmp/before/src
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from rlbound.engines.base import SamplingParams
from rlbound.engines.tiny import CharTokenizer, TinyEngine, TinyLlama, load_model
from rlbound.engines.tiny.export import export_hf
from rlbound.engines.tiny.train import DEFAULT_ARITH_CONFIG
from rlbound.progress import set_quiet
from rlbound.tasks.synthetic import arithmetic_problem
from rlbound.tasks.templates import get_template


def prompts_for(workload: str, batch: int) -> tuple[list[str], list[list[int]]]:
    template = get_template("plain")
    if workload == "one-prompt":
        return [template.render(arithmetic_problem(0, 3, 0).prompt)], [list(range(batch))]
    per = 16
    n = max(1, batch // per)
    prompts = [template.render(arithmetic_problem(0, 1 + i % 6, i).prompt) for i in range(n)]
    return prompts, [[i * per + j for j in range(per)] for i in range(n)]


def time_tiny(engine: TinyEngine, prompts, seeds, length: int, reps: int) -> tuple[float, int]:
    params = SamplingParams(temperature=1.0, max_tokens=length)
    engine.generate(prompts, params, [s[:4] for s in seeds])  # warm-up
    best, tokens = float("inf"), 0
    for _ in range(reps):
        t0 = time.perf_counter()
        out = engine.generate(prompts, params, seeds)
        best = min(best, time.perf_counter() - t0)
        tokens = sum(len(s.token_ids) for per in out for s in per)
    return best, tokens


def time_hf(hf, tok: CharTokenizer, prompts, seeds, length: int, reps: int, fixed: bool):
    rows = [tok.encode(p, bos=True) for p, s in zip(prompts, seeds) for _ in s]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=length,
              pad_token_id=tok.pad_id, use_cache=True)
    if fixed:
        kw.update(min_new_tokens=length, eos_token_id=None)
    else:
        kw.update(eos_token_id=tok.eos_id)
    with torch.inference_mode():
        hf.generate(input_ids=ids[:4], attention_mask=mask[:4], **kw)  # warm-up
        best, tokens = float("inf"), 0
        for rep in range(reps):
            torch.manual_seed(rep)
            t0 = time.perf_counter()
            out = hf.generate(input_ids=ids, attention_mask=mask, **kw)
            best = min(best, time.perf_counter() - t0)
            new = out[:, width:]
            if fixed:
                tokens = new.numel()
            else:  # tokens up to and including the first EOS of each row
                is_eos = new == tok.eos_id
                first = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, new.shape[1])
                tokens = int(first.sum())
    return best, tokens


def matmul_peak(dtype: torch.dtype, size: int = 2048, reps: int = 5) -> float:
    """This machine's matmul rate in ``dtype``, FLOP/s: the best of ``reps`` square products."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best


def flops_per_token(config, context: float) -> float:
    """Forward FLOPs of one decoded token: 2 per weight of the matrices, plus attention's two
    products over ``context`` cached columns per layer."""
    d, f = config.d_model, config.d_ff
    weights = config.n_layers * (3 * d * d + d * d + 2 * d * f + f * d) + d * config.vocab_size
    return 2 * weights + config.n_layers * 4 * d * context


def time_training(model_config, dtype: str, steps: int, batch: int, length: int, compile: bool = False) -> float:
    """Next-token training tokens/s of a fresh model on random ``length``-character texts; with
    ``compile``, of the compiled forward after its compilation: the steps after the first two of
    one fit (``step_s``, each step's wall time; every compiled fit compiles anew, from inductor's
    warm cache)."""
    warm_up = 2 if compile else 0  # steps of the timed run that only offset its compilation
    import inspect
    import random

    from rlbound.engines.tiny.train import train_next_token

    rng = random.Random(0)
    texts = ["".join(rng.choice("0123456789+-*=() ") for _ in range(length - 2)) for _ in range(batch * 4)]
    kw = {"dtype": dtype} if "dtype" in inspect.signature(train_next_token).parameters else {}
    if kw == {} and dtype != "float32":
        raise SystemExit(f"this rlbound has no training dtype (asked {dtype})")
    if compile:
        kw["compile"] = True
    train_next_token(model_config, texts, steps=2, batch_size=batch, warmup=1, **kw)  # warm-up
    t0 = time.perf_counter()
    result = train_next_token(model_config, texts, steps=warm_up + steps, batch_size=batch, warmup=1, **kw)
    elapsed = time.perf_counter() - t0
    if compile:
        elapsed = sum(result.step_s[warm_up:])
    return steps * batch * (length - 1) / elapsed


def tiny_rates(model, dtypes, args) -> dict[str, float]:
    """Tiny-engine tokens/s per (dtype, workload, batch, length), and training tokens/s per dtype."""
    engine_tok = CharTokenizer()
    if args.model is None:
        engine_tok.eos_id = -1  # never sampled: rows run to max_tokens, like min_new_tokens
    rates = {}
    for dtype in dtypes:
        cast = copy.deepcopy(model).to(getattr(torch, dtype))
        for workload in args.workload:
            for batch in args.batch:
                for length in args.length:
                    prompts, seeds = prompts_for(workload, batch)
                    engine = TinyEngine.from_model(cast, engine_tok, batch_size=batch)
                    t, n = time_tiny(engine, prompts, seeds, length, args.reps)
                    rates[f"{dtype} {workload} {batch} {length}"] = n / t
        for length in args.train_length if args.train_steps else ():
            rates[f"{dtype} train {length}"] = time_training(model.config, dtype, args.train_steps, 64, length)
            if args.train_compile:
                rates[f"{dtype} train {length} compiled"] = time_training(
                    model.config, dtype, args.train_steps, 64, length, compile=True)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="tiny model directory (default: random model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--length", type=int, nargs="+", default=[64])
    ap.add_argument("--workload", nargs="+", default=["one-prompt", "mixed"])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--train-steps", type=int, default=6, help="training steps timed per dtype (0: none)")
    ap.add_argument("--train-length", type=int, nargs="+", default=[100, 200],
                    help="characters per training row (100: about the lab's padded pretraining batches)")
    ap.add_argument("--train-compile", action="store_true",
                    help="also time training with the forward compiled by torch.compile (after its compilation)")
    ap.add_argument("--baseline-src", type=Path,
                    help="the src/ folder of another rlbound (e.g. a git worktree of an older commit): "
                         "its tiny engine is timed in float32 in a subprocess, for ratios to it")
    ap.add_argument("--rounds", type=int, default=1,
                    help="time the baseline and this tiny engine alternately this many times and report "
                         "medians, with the range of the per-round ratios (a noisy machine drifts between "
                         "blocks of runs)")
    ap.add_argument("--tiny-only-json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    set_quiet(True)
    torch.set_num_threads(args.threads)
    if args.model:
        model, tok = load_model(args.model)
    else:
        torch.manual_seed(0)
        model, tok = TinyLlama(DEFAULT_ARITH_CONFIG).eval(), CharTokenizer()
    if args.tiny_only_json:  # the baseline subprocess: only what an older rlbound can do
        print(json.dumps(tiny_rates(model, ["float32"], args)))
        return
    from transformers import LlamaForCausalLM

    fixed = args.model is None
    peaks = {dtype: matmul_peak(getattr(torch, dtype)) for dtype in args.dtypes}
    baselines, rounds = [], []
    for _ in range(max(1, args.rounds)):  # alternate, so that the machine's drift hits both sides
        if args.baseline_src:
            cmd = [sys.executable, __file__, "--tiny-only-json", "--threads", str(args.threads),
                   "--reps", str(args.reps), "--train-steps", str(args.train_steps), "--batch", *map(str, args.batch),
                   "--train-length", *map(str, args.train_length),
                   "--length", *map(str, args.length), "--workload", *args.workload]
            if args.model:
                cmd += ["--model", str(args.model)]
            env = {**os.environ, "PYTHONPATH": str(args.baseline_src.resolve())}
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            baselines.append(json.loads(out.stdout.strip().splitlines()[-1]))
        rounds.append(tiny_rates(model, args.dtypes, args))
    rates = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    baseline = {key: statistics.median(b[key] for b in baselines) for key in baselines[0]} if baselines else {}

    def ratio_range(key: str, base_key: str) -> str:
        """The range of the per-round ratios to the baseline (empty with one round)."""
        if len(baselines) < 2:
            return ""
        ratios = [r[key] / b[base_key] for r, b in zip(rounds, baselines)]
        return f" ({min(ratios):.2f}-{max(ratios):.2f})"

    print(f"model: {args.model or 'random'} ({model.num_parameters():,} parameters, "
          f"{model.config.d_model}x{model.config.n_layers}), threads {args.threads}, "
          f"{'fixed length' if fixed else 'stop at EOS'}")
    print("matmul peak (2048^3): " + ", ".join(f"{d} {p / 1e9:,.0f} GFLOP/s" for d, p in peaks.items()))
    header = (f"{'dtype':<9} {'workload':<11} {'batch':>5} {'len':>4} | {'tiny tok/s':>10} {'hf tok/s':>9} "
              f"{'tiny/hf':>7} | {'% peak':>6}" + (f" | {'/before':>7}" if baseline else ""))
    print(header)
    print("-" * len(header))
    for dtype in args.dtypes:
        with tempfile.TemporaryDirectory() as tmp:
            hf = LlamaForCausalLM.from_pretrained(str(export_hf(model, Path(tmp) / "hf", tok)),
                                                  dtype=getattr(torch, dtype)).eval()
        for workload in args.workload:
            for batch in args.batch:
                for length in args.length:
                    key = f"{dtype} {workload} {batch} {length}"
                    prompts, seeds = prompts_for(workload, batch)
                    t_hf, n_hf = time_hf(hf, tok, prompts, seeds, length, args.reps, fixed)
                    r_tiny, r_hf = rates[key], n_hf / t_hf
                    context = len(tok.encode(prompts[0], bos=True)) + length / 2
                    share = r_tiny * flops_per_token(model.config, context) / peaks[dtype]
                    before = baseline.get(f"float32 {workload} {batch} {length}")
                    print(f"{dtype:<9} {workload:<11} {sum(map(len, seeds)):>5} {length:>4} | {r_tiny:>10,.0f} "
                          f"{r_hf:>9,.0f} {r_tiny / r_hf:>6.1f}x | {100 * share:>5.1f}%"
                          + (f" | {r_tiny / before:>6.2f}x{ratio_range(key, f'float32 {workload} {batch} {length}')}"
                             if before else ""), flush=True)
    for dtype in args.dtypes:
        for length, compiled in [(n, c) for n in (args.train_length if args.train_steps else ())
                                 for c in ("", " compiled")]:
            key, base_key = f"{dtype} train {length}{compiled}", f"float32 train {length}"
            if key not in rates:
                continue
            r = rates[key]
            share = 3 * r * flops_per_token(model.config, length / 2) / peaks[dtype]  # forward + backward ~ 3x
            before = baseline.get(base_key)
            print(f"training {dtype:<9} {length:>4} chars{compiled or '         '} {r:>10,.0f} tok/s | {100 * share:>5.1f}% of peak"
                  + (f" | {r / before:.2f}x before{ratio_range(key, base_key)}" if before else ""))


if __name__ == "__main__":
    main()
