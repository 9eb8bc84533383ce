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
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="tiny model directory (default: random model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--length", type=int, nargs="+", default=[64])
    ap.add_argument("--workload", nargs="+", default=["one-prompt", "mixed"])
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    set_quiet(True)
    torch.set_num_threads(args.threads)
    from transformers import LlamaForCausalLM

    if args.model:
        model, tok = load_model(args.model)
    else:
        torch.manual_seed(0)
        model, tok = TinyLlama(DEFAULT_ARITH_CONFIG).eval(), CharTokenizer()
    fixed = args.model is None
    with tempfile.TemporaryDirectory() as tmp:
        hf = LlamaForCausalLM.from_pretrained(str(export_hf(model, Path(tmp) / "hf", tok)),
                                              dtype=torch.float32).eval()
    engine_tok = CharTokenizer()
    if fixed:
        engine_tok.eos_id = -1  # never sampled: rows run to max_tokens, like min_new_tokens
    print(f"model: {args.model or 'random'} ({model.num_parameters():,} parameters, "
          f"{model.config.d_model}x{model.config.n_layers}), threads {args.threads}, "
          f"{'fixed length' if fixed else 'stop at EOS'}")
    header = (f"{'workload':<11} {'batch':>5} {'len':>4} | {'tiny tok/s':>10} {'hf tok/s':>9} "
              f"| {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for workload in args.workload:
        for batch in args.batch:
            for length in args.length:
                prompts, seeds = prompts_for(workload, batch)
                engine = TinyEngine.from_model(model, engine_tok, batch_size=batch)
                t_tiny, n_tiny = time_tiny(engine, prompts, seeds, length, args.reps)
                t_hf, n_hf = time_hf(hf, tok, prompts, seeds, length, args.reps, fixed)
                r_tiny, r_hf = n_tiny / t_tiny, n_hf / t_hf
                print(f"{workload:<11} {sum(map(len, seeds)):>5} {length:>4} | {r_tiny:>10,.0f} "
                      f"{r_hf:>9,.0f} | {r_tiny / r_hf:>5.1f}x", flush=True)


if __name__ == "__main__":
    main()
