"""Ray replicas of the tiny engine: 1 and 2 replicas against the engine in this process.

Run by hand (not part of the tests)::

    python bench/bench_ray.py                 # a random tiny model, arithmetic prompts
    python bench/bench_ray.py --model runs/lab/base --n 256

The same requests (prompts, seeds, parameters) are streamed three ways, each engine on one
thread per process (``OMP_NUM_THREADS=1``, as the replicas get it from Ray):

* **local**: the tiny engine in this process (``Engine.stream``);
* **1 replica** and **2 replicas**: :class:`rlbound.distributed.ReplicaEngine` on a local Ray
  cluster started here, completions returned to this process.

Reported: samples/s of each, the speed-up of 2 replicas over 1 (on a 2-core machine the ceiling
is 2x), and the overhead per sample of going through one replica: (time of 1 replica - local) /
samples. Outputs are checked to be identical across the three.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from rlbound.engines.base import SampleRequest, SamplingParams, load_engine, sample_seed  # noqa: E402
from rlbound.progress import set_quiet  # noqa: E402
from rlbound.tasks.base import load_task  # noqa: E402
from rlbound.tasks.templates import get_template  # noqa: E402


def timed_stream(engine, requests, params) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = {r.key: s.text for r, s in engine.stream(iter(requests), params)}
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="tiny model directory (default: a random default-size model)")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    set_quiet(True)
    torch.set_num_threads(1)
    model = args.model
    if model is None:
        from rlbound.engines.tiny import CharTokenizer, TinyLlama
        from rlbound.engines.tiny.checkpoint import save_model
        from rlbound.engines.tiny.train import DEFAULT_ARITH_CONFIG

        torch.manual_seed(0)
        model = str(save_model(TinyLlama(DEFAULT_ARITH_CONFIG), CharTokenizer(),
                               Path(tempfile.mkdtemp(prefix="bench-ray-")) / "m"))
    task = load_task("arithmetic", n=args.problems, difficulty=3)
    template = get_template(task.template)
    requests = [SampleRequest((p.id, i), template.render(p.prompt), sample_seed(0, p.id, i))
                for p in task.problems for i in range(args.n)]
    params = SamplingParams(max_tokens=args.max_tokens)
    local = load_engine("tiny", model, batch_size=args.batch)
    local.stream(iter(requests[:64]), params)  # warm-up
    t_local, ref = timed_stream(local, requests, params)

    import ray

    from rlbound.distributed import ReplicaEngine

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    results = {}
    for replicas in (1, 2):
        engine = ReplicaEngine("tiny", model, {"batch_size": args.batch}, replicas=replicas)
        list(engine.stream(iter(requests[:64]), params))  # warm-up
        elapsed, out = timed_stream(engine, requests, params)
        engine.close()
        assert out == ref, f"{replicas} replica(s) gave other samples than the local engine"
        results[replicas] = elapsed
    ray.shutdown()
    total = len(requests)
    print(f"{total} samples ({args.problems} problems x {args.n}), {args.max_tokens} tokens max, "
          f"batch {args.batch}, {os.cpu_count()} CPUs; outputs identical")
    print(f"local engine: {total / t_local:8.1f} samples/s")
    for replicas, elapsed in results.items():
        print(f"{replicas} replica(s): {total / elapsed:8.1f} samples/s")
    print(f"2 replicas / 1 replica: {results[1] / results[2]:.2f}x")
    print(f"overhead of one replica: {(results[1] - t_local) / total * 1e3:.3f} ms per sample "
          f"({results[1] / t_local:.2f}x the local time)")


if __name__ == "__main__":
    main()
