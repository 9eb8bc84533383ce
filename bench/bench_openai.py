"""The ``openai`` engine versus the bare ``openai`` async client, same server, same requests.

Run by hand (not part of the tests)::

    python bench/bench_openai.py                                   # starts vLLM on a lab model
    python bench/bench_openai.py --model-dir path/to/hf-model      # starts vLLM on that model
    python bench/bench_openai.py --base-url http://HOST:8000/v1 --model NAME   # a running server

Three ways to draw the same requests (prompt, per-request seed, temperature 1, ``max_tokens``,
sampled-token log-probs, vLLM's ``return_token_ids``) at the same concurrency:

* **bare**: ``openai.AsyncOpenAI`` with an ``asyncio.Semaphore`` (what a hand-written script does);
* **engine**: rlbound's ``OpenAIEngine.stream`` (its background loop, retries, parsing);
* **sample_run**: rlbound's whole pipeline (engine, verifier thread, Parquet shards) into a
  fresh run directory.

Each is run ``--reps`` times in turn (bare, engine, sample_run, bare, ...) after one warm-up, so
drift on a shared machine hits all three; the median wall time of each is reported as samples/s
and generated tokens/s, with the ratio to bare, and the client process's CPU time per request
(the engine's own overhead: on a small machine client and server share the cores). Without
``--base-url`` the server is vLLM's OpenAI-compatible server (as the tests start it: float32,
eager mode, small KV cache; ``--compile`` lets vLLM compile instead), killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import openai

from rlbound.engines.base import SampleRequest, SamplingParams, load_engine, sample_seed
from rlbound.progress import set_quiet
from rlbound.sampler import sample_run
from rlbound.tasks.base import load_task
from rlbound.tasks.templates import get_template
from rlbound.verify.base import load_verifier


def start_server(model_dir: Path, name: str, log: Path, compile_model: bool) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--kv-cache-memory-bytes", str(1 << 30), "--max-num-batched-tokens", "16384", "--disable-log-stats",
           "--disable-uvicorn-access-log"]
    if not compile_model:
        cmd += ["--enforce-eager", "-O0"]
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"vLLM server exited; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    sys.exit(f"vLLM server not ready after 600 s; see {log}")


def lab_model(root: Path) -> Path:
    from rlbound.engines.tiny.export import export_hf
    from rlbound.engines.tiny.train import fit_arithmetic_model

    trained = fit_arithmetic_model(root / "tiny", difficulty=1, n_train=2000, steps=120, eval_n=0)
    export_hf(trained.model_dir, root / "hf")
    return root / "hf"


async def bare_client(url: str, model: str, requests: list[SampleRequest], max_tokens: int,
                      concurrency: int) -> int:
    """The hand-written script: one request per sample, a semaphore, token ids and log-probs."""
    slots = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=url, api_key=os.environ.get("OPENAI_API_KEY", "none"),
                                  max_retries=3) as client:
        async def one(request: SampleRequest) -> tuple[str, list[int], list[float]]:
            async with slots:
                response = await client.completions.create(
                    model=model, prompt=request.prompt, seed=request.seed, temperature=1.0, top_p=1.0,
                    max_tokens=max_tokens, logprobs=0, extra_body={"return_token_ids": True})
                choice = response.choices[0]
                return choice.text, choice.model_extra["token_ids"], choice.logprobs.token_logprobs

        results = await asyncio.gather(*(one(r) for r in requests))
        return sum(len(ids) for _, ids, _ in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", help="a running server (default: start vLLM)")
    ap.add_argument("--model", default="bench", help="served model name")
    ap.add_argument("--model-dir", type=Path, help="HF model directory to serve (default: a lab model)")
    ap.add_argument("--compile", action="store_true", help="let vLLM compile the model (slower start)")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--n", type=int, default=32, help="samples per problem")
    ap.add_argument("--difficulty", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    set_quiet(True)

    tmp = Path(tempfile.mkdtemp(prefix="bench-openai-"))
    proc = None
    url = args.base_url
    if url is None:
        model_dir = args.model_dir or lab_model(tmp / "model")
        t0 = time.perf_counter()
        proc, url = start_server(model_dir, args.model, tmp / "server.log", args.compile)
        print(f"vLLM server up in {time.perf_counter() - t0:.0f} s ({url})")
    try:
        task = load_task("arithmetic", n=args.problems, difficulty=args.difficulty)
        plain = get_template("plain")
        requests = [SampleRequest((p.id, i), plain.render(p.prompt), sample_seed(0, p.id, i))
                    for p in task.problems for i in range(args.n)]
        params = SamplingParams(temperature=1.0, max_tokens=args.max_tokens)
        engine = load_engine("openai", args.model, base_url=url, concurrency=args.concurrency)
        verifier = load_verifier(task.verifier)

        def run_bare() -> int:
            return asyncio.run(bare_client(url, args.model, requests, args.max_tokens, args.concurrency))

        def run_engine() -> int:
            return sum(s.token_count for _, s in engine.stream(iter(requests), params))

        runs = itertools.count()

        def run_sampler() -> int:
            stats = sample_run(tmp / f"run-{next(runs)}", task, engine, verifier, params, args.n, seed=0)
            assert stats.sampled == len(requests)
            return -1  # tokens: the same requests as the engine's

        ways = {"bare": run_bare, "engine": run_engine, "sample_run": run_sampler}
        tokens = {name: run() for name, run in ways.items()}  # warm-up (and token counts)
        assert tokens["bare"] == tokens["engine"], "same seeds should give the same completions"
        tokens["sample_run"] = tokens["engine"]
        walls: dict[str, list[float]] = {name: [] for name in ways}
        cpu: dict[str, list[float]] = {name: [] for name in ways}  # this process's CPU time
        for _ in range(args.reps):
            for name, run in ways.items():
                t0, c0 = time.perf_counter(), time.process_time()
                run()
                walls[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        print(f"{len(requests)} requests ({args.problems} prompts x {args.n}), max_tokens {args.max_tokens}, "
              f"concurrency {args.concurrency}, {tokens['bare']} tokens per pass, median of {args.reps}")
        bare = statistics.median(walls["bare"])
        for name in ways:
            wall = statistics.median(walls[name])
            print(f"  {name:<10} {wall:7.2f} s  {len(requests) / wall:8.1f} samples/s  "
                  f"{tokens[name] / wall:8.1f} tokens/s  ratio to bare {bare / wall:.3f}  "
                  f"client CPU {1e3 * statistics.median(cpu[name]) / len(requests):.2f} ms/request  "
                  f"(runs: {', '.join(f'{w:.2f}' for w in walls[name])})")
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
