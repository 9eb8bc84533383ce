"""The streaming sampler versus the chunked one it replaced: share of wall time the engine is busy.

Run by hand (not part of the tests)::

    python bench/bench_stream.py                  # a tiny arithmetic model trained for the bench
    python bench/bench_stream.py --model runs/lab/base --task countdown-lab ...

Both samplers run the same engine on the same requests (seeds, prompts, parameters) with the same
verifier (``math`` by default: Math-Verify in worker processes, the expensive case) and write the
same shards:

* **chunked** (rlbound before the streaming sampler): chunks of 4 engine batches; each chunk is
  generated, then verified, then written, so the engine waits while the verifier works;
* **streaming** (:func:`rlbound.sampler.sample_run`): the engine generates while a verifier thread
  grades and writes.

"Busy" is the wall time spent inside the engine's generate/stream calls divided by the sampler's
wall time. On a 2-core machine the verifier's worker processes also take CPU from the engine, so
samples/s is printed beside it: the two are measured side by side in one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rlbound.engines.base import SampleRequest, SamplingParams, load_engine, sample_seed
from rlbound.progress import set_quiet
from rlbound.sampler import run_config, sample_run
from rlbound.store import RunWriter
from rlbound.tasks.base import load_task
from rlbound.tasks.templates import get_template
from rlbound.verify.base import load_verifier
from rlbound.verify.pool import VerifyCache, verify_batch


def chunked_sample(out: Path, task, engine, verifier, params, n: int) -> tuple[float, float]:
    """The pre-streaming sampler's loop (generate, then verify, then write, per chunk)."""
    template = get_template(task.template)
    chunk = min(1024, max(64, 4 * int(getattr(engine, "batch_size", 64))))
    requests = [SampleRequest((p.id, i), template.render(p.prompt, engine), sample_seed(0, p.id, i))
                for p in task.problems for i in range(n)]
    refs = {p.id: p.reference for p in task.problems}
    cache, busy = VerifyCache(), 0.0
    started = time.perf_counter()
    with RunWriter(out, run_config(task, task.template, engine.info(), params, 0, verifier), n) as writer:
        for start in range(0, len(requests), chunk):
            part = requests[start:start + chunk]
            t0 = time.perf_counter()
            samples = engine.generate_requests(part, params)
            busy += time.perf_counter() - t0
            verdicts = verify_batch(verifier, [refs[r.key[0]] for r in part], [s.text for s in samples],
                                    cache=cache)
            writer.write_shard([{
                "problem_id": r.key[0], "sample_idx": r.key[1], "seed": r.seed, "completion": s.text,
                "token_count": s.token_count, "finish_reason": s.finish_reason,
                "logprob_sum": s.logprob_sum, "logprob_mean": s.logprob_mean, "entropy_mean": s.entropy_mean,
                "answer": v.answer, "correct": v.correct, "verify_status": v.status,
                "correct_base": v.correct_base} for r, s, v in zip(part, samples, verdicts)])
    return busy, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="tiny model directory (default: train a small arithmetic model)")
    ap.add_argument("--task", default="arithmetic")
    ap.add_argument("--task-option", "-O", action="append", default=["n=100", "difficulty=2"])
    ap.add_argument("--verifier", default="math")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    set_quiet(True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    model = args.model
    if model is None:
        from rlbound.engines.tiny.train import fit_arithmetic_model

        model = fit_arithmetic_model(tmp / "model", difficulty=2, n_train=4000, steps=200, eval_n=0).model_dir
    options = {k: int(v) if v.isdigit() else v for k, v in (kv.split("=", 1) for kv in args.task_option)}
    task = load_task(args.task, **options)
    engine = load_engine("tiny", str(model), batch_size=args.batch)
    verifier = load_verifier(args.verifier)
    params = SamplingParams(max_tokens=args.max_tokens)
    total = len(task) * args.n
    # Warm up (worker start-up, first allocations) outside the timings.
    sample_run(tmp / "warm", load_task(args.task, **{**options, "n": 2}), engine, verifier, params, 8)
    busy_c, wall_c = chunked_sample(tmp / "chunked", task, engine, verifier, params, args.n)
    stats = sample_run(tmp / "stream", task, engine, verifier, params, args.n)
    print(f"{total} samples ({len(task)} problems x {args.n}), verifier {args.verifier}, batch {args.batch}")
    print(f"chunked:   engine busy {busy_c / wall_c:6.1%}  {total / wall_c:8.1f} samples/s")
    print(f"streaming: engine busy {stats.engine_busy_share:6.1%}  {total / stats.wall_s:8.1f} samples/s")
    print(f"streaming / chunked throughput: {wall_c / stats.wall_s:.2f}x")


if __name__ == "__main__":
    main()
