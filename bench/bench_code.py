"""Benchmark: the sandboxed code verifier (``CodeVerifier``) on HumanEval(+), against a bare
subprocess and against evalplus's own (unsandboxed) evaluator.

One run measures, side by side:

1. **Checks per second on HumanEval base inputs**: the 164 canonical solutions (a continuation of
   the prompt) graded on the ``humaneval`` task by ``verify_batch`` with a fresh cache (every
   check distinct), for each pool size of ``--workers``; once on a cold pool (worker start-up
   included) and once on the warm pool. The issue's target is >= 60 sandboxed checks/s on 2 cores.
2. **Overhead per check**, one at a time in this process: a bare ``subprocess.run`` of
   ``/usr/bin/python3 -E -s -c`` with the harness's imports reading the same job from stdin (and
   of ``-c pass``); ``run_sandboxed("pass")``; one full ``CodeVerifier().grade`` of HumanEval/0 (base inputs); and
   the same grade with ``sandbox=False`` (the harness as a plain child), which splits the cost
   between the sandbox and the harness. Medians, in ms, with ratios to the bare subprocess, and
   the CPU time per run (this process plus its children), which bounds the rate on few cores.
3. **The cache under realistic repetition**: n completions per problem (default 64) drawn with a
   skewed distribution from a small pool: the canonical continuation, the same with a comment and
   blank line added (the same cache key), the whole program in a markdown fence (another key,
   also right), ``return None`` and ``raise NotImplementedError`` bodies (wrong). verify_batch with
   a fresh ``VerifyCache`` (distinct checks from ``cache.stats()``), against the same completions
   with the cache defeated by a unique no-op statement (``_ = i``) in each; comments would not do,
   being normalised away. The defeated run is timed on a random subset (``--nocache-sample``) and
   extrapolated, which the output says.
4. **HumanEval+ with every plus input**: the 164 canonical solutions on ``humaneval_plus`` (base +
   ~750 plus inputs each) through rlbound, and the same solutions through evalplus 0.3.1's
   ``check_correctness`` (unsandboxed: one ``multiprocessing.Process`` per test set) in a
   ``ProcessPoolExecutor``, as ``evalplus.evaluate`` runs them, timed in a driver inside evalplus's
   own virtual environment. Unless ``--limit`` is given, the ``evalplus.evaluate`` command itself is
   also run end to end (it computes its ground truth first and reports how long that took).
   evalplus runs offline: ``HUMANEVAL_OVERRIDE_PATH`` points at the local HumanEval+ file and its
   cache (``XDG_CACHE_HOME``) is under the bench's cache directory.

Loading a task computes the canonical expected outputs once (cached under ``$RLBOUND_CACHE``, set
here to ``--cache-dir`` or a fresh temporary directory), so a cold first load is slower; the load
times are printed and kept out of every rate.

evalplus lives in its own virtual environment (not rlbound's)::

    python3 -m venv /tmp/evp-venv && /tmp/evp-venv/bin/pip install evalplus==0.3.1

Not part of the test suite. Example::

    python bench/bench_code.py --workers 2,4,8 --n 64
    python bench/bench_code.py --limit 40 --skip-evalplus
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path("/work/shared/data/code/HumanEvalPlus.jsonl.gz")
DEFAULT_EVALPLUS = Path("/tmp/evp-venv")
TARGET_CHECKS_PER_S = 60.0
# What the harness imports at start-up (rlbound/verify/code_harness.py), reading the job from stdin.
TRIVIAL = ("import ast, collections, io, json, math, os, signal, sys, time; "
           "json.loads(sys.stdin.buffer.read().decode('utf-8'))")

# Runs under evalplus's interpreter: its check phase as evalplus.evaluate runs it, timed alone.
EVALPLUS_DRIVER = r'''
import json, sys, time
from concurrent.futures import ProcessPoolExecutor
from evalplus.data import get_human_eval_plus, get_human_eval_plus_hash
from evalplus.evaluate import check_correctness, get_groundtruth

samples, parallel = sys.argv[1], int(sys.argv[2])
problems = get_human_eval_plus()
start = time.perf_counter()
expected = get_groundtruth(problems, get_human_eval_plus_hash(), [])
gt_s = time.perf_counter() - start
solutions = [json.loads(line) for line in open(samples) if line.strip()]
start = time.perf_counter()
with ProcessPoolExecutor(max_workers=parallel) as pool:
    futures = [pool.submit(check_correctness, "humaneval", 0, problems[s["task_id"]], s["solution"],
                           expected[s["task_id"]], False, True, s["task_id"], 1.0, 4.0)
               for s in solutions]
    results = [f.result() for f in futures]
seconds = time.perf_counter() - start
status = {r["task_id"]: [r["base"][0], r["plus"][0]] for r in results}
n_inputs = sum(len(problems[s["task_id"]]["base_input"]) + len(problems[s["task_id"]]["plus_input"])
               for s in solutions)
print("EVALPLUS_RESULT " + json.dumps({"seconds": seconds, "gt_s": gt_s, "status": status,
                                       "n_inputs": n_inputs, "python": sys.version.split()[0]}))
'''


def read_rows(limit: int | None) -> list[dict]:
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:limit] if limit else rows


def cpu_s() -> float:
    """CPU seconds of this process and of its waited-for children (workers, sandboxes) so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def load_note() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def load(name: str, limit: int | None):
    from rlbound.tasks.base import load_task

    return timed(load_task, name, path=str(DATA), limit=limit)


def aligned(task, rows: list[dict]) -> list[dict]:
    """The file's rows in the task's problem order (a problem whose canonical fails everywhere is left out)."""
    by_id = {r["task_id"]: r for r in rows}
    return [by_id[p.id] for p in task.problems]


def warm_up(verifier, pool, task, rows, workers: int) -> None:
    """Start every worker of ``pool`` (distinct checks: the last problems' canonical solutions)."""
    from rlbound.verify import VerifyCache, verify_batch

    problems = task.problems[-workers:]
    verify_batch(verifier, [p.reference for p in problems],
                 [r["canonical_solution"] for r in aligned(task, rows)[-workers:]], pool=pool,
                 cache=VerifyCache(), workers=workers)


def table(header: list[str], rows: list[list], widths: list[int]) -> None:
    """Print a table: first column left-aligned, the others right-aligned."""
    def fmt(cells):
        return "".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths)))

    print(fmt(header))
    for row in rows:
        print(fmt(row))


def statuses(verdicts) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in verdicts:
        key = "pass" if v.correct else v.status if v.status != "ok" else "fail"
        out[key] = out.get(key, 0) + 1
    return out


# --- part 1 --------------------------------------------------------------------------------------


def part_throughput(task, rows, worker_counts: list[int]) -> None:
    from rlbound.verify import VerifierPool, VerifyCache, verify_batch
    from rlbound.verify.code import CodeVerifier

    rows = aligned(task, rows)
    refs = [p.reference for p in task.problems]
    completions = [r["canonical_solution"] for r in rows]
    print(f"\n== 1. checks/s: {len(refs)} HumanEval canonical solutions, base inputs, "
          f"every check distinct (fresh cache) ==")
    out, failures, cpu_notes = [], {}, []
    for workers in worker_counts:
        verifier = CodeVerifier(workers=workers)
        cpu_before, checks = cpu_s(), 0
        with VerifierPool(workers=workers) as pool:
            for label in ("cold pool", "warm pool"):
                cache = VerifyCache()
                verdicts, secs = timed(verify_batch, verifier, refs, completions, pool=pool, cache=cache,
                                       workers=workers)
                rate = cache.checks / secs
                checks += cache.checks
                out.append([f"{workers} workers, {label}", cache.checks, f"{secs:.2f}", f"{rate:.1f}",
                            f"{rate / TARGET_CHECKS_PER_S:.2f}", str(statuses(verdicts))])
                for p, v in zip(task.problems, verdicts):
                    if not v.correct:
                        failures[p.id] = v.status
        per_check = (cpu_s() - cpu_before) / checks * 1000  # the pool is closed: its workers were waited for
        cpu_notes.append(f"{workers}w {per_check:.0f} ms ({(os.cpu_count() or 1) * 1000 / per_check:.0f}/s)")
    table(["pool", "checks", "seconds", "checks/s", "x target", "verdicts"], out, [26, 8, 9, 10, 10, 28])
    print("CPU per check (this process + workers + sandboxes, both batches, worker start-up included), "
          "and the CPU-bound ceiling it implies: " + ", ".join(cpu_notes))
    best = max(float(r[3]) for r in out)
    print(f"target {TARGET_CHECKS_PER_S:.0f} checks/s on {os.cpu_count()} cores: best {best:.1f} "
          f"({'met' if best >= TARGET_CHECKS_PER_S else 'NOT met'})")
    if failures:
        print(f"canonical solutions that did not pass: {failures}")


# --- part 2 --------------------------------------------------------------------------------------


def part_overhead(task, rows, reps: int) -> None:
    from rlbound.verify.code import CodeVerifier, parse_spec
    from rlbound.verify.sandbox import PYTHON, run_sandboxed

    spec = parse_spec(task.problems[0].reference)
    program = aligned(task, rows)[0]["canonical_solution"]
    payload = json.dumps({"mode": "function", "program": spec.prompt + program, "entry_point": spec.entry_point,
                          "inputs": list(spec.inputs), "input_timeouts": [1.0] * len(spec.inputs),
                          "nonce": "0" * 16, "output_cap": 2**20, "not_none": False}).encode()
    sandboxed, unsandboxed = CodeVerifier(), CodeVerifier(sandbox=False)
    outcomes: dict[str, str] = {}

    def bare():
        subprocess.run([PYTHON, "-E", "-s", "-c", TRIVIAL], input=payload, capture_output=True, check=True)

    def bare_pass():
        subprocess.run([PYTHON, "-E", "-s", "-c", "pass"], capture_output=True, check=True)

    def sandbox_pass():
        result = run_sandboxed("pass")
        outcomes["sandbox"] = result.status

    def full(verifier, key):
        def go():
            outcomes[key] = verifier.grade(spec, program).status
        return go

    cases = [("(a) bare subprocess.run python3 -c", bare),
             ("(a0) same with -c pass, no stdin", bare_pass),
             ("(b) run_sandboxed('pass')", sandbox_pass),
             ("(c) CodeVerifier().grade HumanEval/0", full(sandboxed, "grade")),
             ("(d) same, sandbox=False (harness only)", full(unsandboxed, "grade_unsandboxed"))]
    print(f"\n== 2. overhead per check, one at a time ({reps} runs each after 3 warm-ups; "
          f"HumanEval/0 has {len(spec.inputs)} base inputs) ==")
    medians, cpus, out = {}, {}, []
    for label, fn in cases:
        for _ in range(3):
            fn()
        samples, cpu_before = [], cpu_s()
        for _ in range(reps):
            _, secs = timed(fn)
            samples.append(secs * 1000)
        cpu_ms = (cpu_s() - cpu_before) / reps * 1000
        medians[label] = statistics.median(samples)
        cpus[label] = cpu_ms
        out.append([label, f"{medians[label]:.1f}", f"{statistics.mean(samples):.1f}", f"{min(samples):.1f}",
                    f"{max(samples):.1f}", f"{medians[label] / medians[cases[0][0]]:.2f}x",
                    f"{cpu_ms:.1f}", f"{cpu_ms / cpus[cases[0][0]]:.2f}x"])
    table(["path", "median ms", "mean", "min", "max", "vs (a)", "cpu ms", "cpu vs (a)"], out,
          [42, 11, 8, 8, 8, 9, 9, 12])
    a, a0, b, c, d = (medians[label] for label, _ in cases)
    print(f"sandbox launch over bare subprocess (b - a0): {b - a0:.1f} ms;  a full check over the sandbox "
          f"alone (c - b): {c - b:.1f} ms;  sandbox share of a check (c - d): {c - d:.1f} ms;  "
          f"verdicts {outcomes}")
    cores = os.cpu_count() or 1
    print(f"CPU-bound ceilings on {cores} cores (cores x 1000 / cpu ms): bare subprocess "
          f"{cores * 1000 / cpus[cases[0][0]]:.0f}/s, sandbox launch {cores * 1000 / cpus[cases[2][0]]:.0f}/s, "
          f"full check {cores * 1000 / cpus[cases[3][0]]:.0f}/s, unsandboxed check {cores * 1000 / cpus[cases[4][0]]:.0f}/s;  {load_note()}")


# --- part 3 --------------------------------------------------------------------------------------


def forms_for(row: dict) -> list[tuple[str, bool]]:
    """Distinct completions for one problem (most likely first) and whether each is right."""
    canonical = row["canonical_solution"]
    return [
        (canonical, True),
        (canonical.rstrip("\n") + "\n\n    # this should work\n", True),  # same cache key as canonical
        ("Here is the function:\n```python\n" + row["prompt"] + canonical + "```\n", True),
        ("    return None\n", False),
        ("    raise NotImplementedError\n", False),
    ]


def defeat(completion: str, i: int) -> str:
    """The same program with a unique no-op statement, so its cache key is new."""
    if "```python\n" in completion:  # a whole program: a top-level statement before the fence closes
        head, _, tail = completion.rpartition("```")
        return f"{head}_ = {i}\n```{tail}"
    return f"    _ = {i}\n" + completion  # a continuation: the first statement of the body


def part_cache(task, rows, n: int, workers: int, sample: int, seed: int) -> None:
    from rlbound.verify import VerifierPool, VerifyCache, verify_batch
    from rlbound.verify.code import CodeVerifier

    rng = random.Random(seed)
    refs, completions, right = [], [], []
    for problem, row in zip(task.problems, aligned(task, rows)):
        forms = forms_for(row)
        weights = [1.0 / (rank + 1) ** 1.3 for rank in range(len(forms))]
        rng.shuffle(weights)  # problems differ in which completion dominates
        for text, ok in rng.choices(forms, weights=weights, k=n):
            refs.append(problem.reference)
            completions.append(text)
            right.append(ok)
    total = len(completions)
    verifier = CodeVerifier(workers=workers)
    # The per-completion work verify_batch does in the calling process before any check: extraction
    # and normalisation (ast parse + unparse) of every completion, cache or no cache.
    keys, keys_s = timed(lambda: {(r, verifier.normalise(verifier.extract(c))) for r, c in zip(refs, completions)})
    distinct_keys = len(keys)
    print(f"\n== 3. cache: {len(rows)} problems x n={n} = {total} completions, {distinct_keys} distinct "
          f"(reference, program) keys, pool of {workers} workers ==")
    out = []
    with VerifierPool(workers=workers) as pool:
        warm_up(verifier, pool, task, rows, workers)
        cache = VerifyCache()
        verdicts, secs = timed(verify_batch, verifier, refs, completions, pool=pool, cache=cache)
        stats = cache.stats()
        cached_rate = total / secs
        wrong = sum(v.correct != ok for v, ok in zip(verdicts, right))
        out.append(["fresh VerifyCache", total, stats["checks"], f"{secs:.2f}", f"{cached_rate:.1f}",
                    f"{stats['checks'] / secs:.1f}", "measured"])

        # The cache defeated: every completion a distinct program (a unique no-op statement).
        idx = sorted(rng.sample(range(total), min(sample, total))) if sample else list(range(total))
        d_refs = [refs[i] for i in idx]
        d_comps = [defeat(completions[i], i) for i in idx]
        d_keys = len({(r, verifier.normalise(verifier.extract(c))) for r, c in zip(d_refs, d_comps)})
        cache2 = VerifyCache()
        d_verdicts, d_secs = timed(verify_batch, verifier, d_refs, d_comps, pool=pool, cache=cache2)
        d_rate = len(idx) / d_secs
        d_wrong = sum(v.correct != right[i] for v, i in zip(d_verdicts, idx))
        note = "measured" if len(idx) == total else f"{len(idx)} timed, extrapolated"
        out.append(["cache defeated (_ = i added)", total, total, f"{total / d_rate:.2f}", f"{d_rate:.1f}",
                    f"{cache2.checks / d_secs:.1f}", note])
    table(["path", "samples", "checks", "seconds", "samples/s", "checks/s", "note"], out,
          [32, 9, 8, 10, 11, 10, 28])
    print(f"speed-up from the cache: {cached_rate / d_rate:.1f}x;  cache.stats() {stats};  "
          f"defeated run: {d_keys} distinct keys for {len(idx)} samples, {cache2.checks} checks;  "
          f"verdicts {statuses(verdicts)};  verdicts not as built: {wrong}/{total} cached, "
          f"{d_wrong}/{len(idx)} defeated")
    print(f"extract + normalise alone, in this process: {keys_s:.2f}s for {total} completions "
          f"({total / keys_s:,.0f}/s), part of the cached run's {secs:.2f}s")


# --- part 4 --------------------------------------------------------------------------------------


def evalplus_python(arg: str | None) -> Path | None:
    """The interpreter of evalplus's venv from a venv folder, its python or its bin/evalplus.*."""
    path = Path(arg) if arg else DEFAULT_EVALPLUS
    if path.is_dir():
        path = path / "bin" / "python"
    elif not path.name.startswith("python"):
        path = path.parent / "python"
    return path if path.exists() else None


def evalplus_env(cache: Path) -> dict:
    env = dict(os.environ, HUMANEVAL_OVERRIDE_PATH=str(DATA), XDG_CACHE_HOME=str(cache / "evalplus"),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    env.pop("PYTHONPATH", None)
    return env


def part_plus(rows, limit: int | None, workers: int, evalplus: str | None, skip_evalplus: bool,
              parallel: int, cache: Path, work: Path) -> None:
    from rlbound.verify import VerifierPool, VerifyCache, verify_batch
    from rlbound.verify.code import CodeVerifier

    task, load_s = load("humaneval_plus", limit)
    refs = [p.reference for p in task.problems]
    n_inputs = sum(p.metadata["inputs"] for p in task.problems)
    dropped = sum(p.metadata["dropped_inputs"] for p in task.problems)
    completions = [r["canonical_solution"] for r in aligned(task, rows)]
    print(f"\n== 4. HumanEval+: {len(refs)} canonical solutions on base + plus inputs ({n_inputs} inputs, "
          f"{n_inputs / len(refs):.0f} per problem; {dropped} dropped where the canonical fails); "
          f"task load {load_s:.1f}s ==")
    verifier = CodeVerifier(workers=workers)
    with VerifierPool(workers=workers) as pool:
        warm_up(verifier, pool, task, rows, workers)
        vcache = VerifyCache()
        verdicts, secs = timed(verify_batch, verifier, refs, completions, pool=pool, cache=vcache)
    rl_rate = len(refs) / secs
    rl_status = {p.id: ("pass" if v.correct else v.status if v.status != "ok" else "fail",
                        v.correct_base) for p, v in zip(task.problems, verdicts)}
    out = [[f"rlbound, sandboxed, {workers} workers", len(refs), f"{secs:.2f}", f"{rl_rate:.2f}",
            f"{n_inputs / secs:,.0f}", "1.00", str(statuses(verdicts))]]
    failed = {k: v for k, v in rl_status.items() if v[0] != "pass"}

    py = None if skip_evalplus else evalplus_python(evalplus)
    ep_notes = []
    if skip_evalplus:
        ep_notes.append("evalplus skipped (--skip-evalplus)")
    elif py is None:
        ep_notes.append(f"evalplus skipped: no venv at {evalplus or DEFAULT_EVALPLUS} (make one: python3 -m venv "
                        f"/tmp/evp-venv && /tmp/evp-venv/bin/pip install evalplus==0.3.1, or pass --evalplus)")
    else:
        env = evalplus_env(cache)
        samples = work / "samples.jsonl"
        with samples.open("w") as f:
            for r in rows:
                f.write(json.dumps({"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]}) + "\n")
        if limit is None:  # the CLI insists on every problem
            (work / "samples_eval_results.json").unlink(missing_ok=True)
            cmd = [str(py), "-m", "evalplus.evaluate", "--dataset", "humaneval", "--samples", str(samples),
                   "--parallel", str(parallel)]
            print("$ " + " ".join(f"{k}={env[k]}" for k in ("HUMANEVAL_OVERRIDE_PATH", "XDG_CACHE_HOME"))
                  + " " + " ".join(cmd))
            proc, cli_s = timed(subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=900)
            text = proc.stdout + proc.stderr
            gt = re.search(r"Expected outputs computed in ([\d.]+)s", text)
            passes = re.findall(r"pass@1:\s*([\d.]+)", text)
            if proc.returncode != 0:
                ep_notes.append(f"evalplus.evaluate failed (rc {proc.returncode}): {text.strip()[-500:]}")
            else:
                gt_s = float(gt.group(1)) if gt else 0.0
                check_s = cli_s - gt_s
                out.append([f"evalplus.evaluate CLI, --parallel {parallel}", len(rows), f"{check_s:.2f}",
                            f"{len(rows) / check_s:.2f}", f"{n_inputs / check_s:,.0f}",
                            f"{rl_rate / (len(rows) / check_s):.2f}",
                            f"pass@1 base/plus {'/'.join(passes)}"])
                ep_notes.append(f"CLI wall {cli_s:.1f}s end to end, of which ground truth "
                                f"{'%.1fs (computed)' % gt_s if gt else 'loaded from its cache'}; the row is "
                                "wall minus ground truth (interpreter start, imports and pass@k included)")
        cmd = [str(py), "-c", EVALPLUS_DRIVER, str(samples), str(parallel)]
        print(f"$ {py} -c EVALPLUS_DRIVER {samples} {parallel}   (same env)")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("EVALPLUS_RESULT ")), None)
        if proc.returncode != 0 or line is None:
            ep_notes.append(f"evalplus driver failed (rc {proc.returncode}): {(proc.stdout + proc.stderr).strip()[-800:]}")
        else:
            res = json.loads(line.split(" ", 1)[1])
            ep_rate = len(res["status"]) / res["seconds"]
            ep_pass = sum(b == p == "pass" for b, p in res["status"].values())
            out.append([f"evalplus check phase, {parallel} procs", len(res["status"]), f"{res['seconds']:.2f}",
                        f"{ep_rate:.2f}", f"{res['n_inputs'] / res['seconds']:,.0f}", f"{rl_rate / ep_rate:.2f}",
                        f"{{'pass': {ep_pass}, 'other': {len(res['status']) - ep_pass}}}"])
            ep_notes.append(f"evalplus on Python {res['python']} (unsandboxed), its ground truth step "
                            f"{res['gt_s']:.1f}s in the driver (cached after the first computation); rlbound's "
                            f"programs on /usr/bin/python3 in bubblewrap")
            ep_failed = {t: s for t, s in res["status"].items() if s != ["pass", "pass"]}
            if ep_failed:
                ep_notes.append(f"evalplus verdicts not pass (base, plus): {ep_failed}")
            disagree = {t: (rl_status[t][0], s) for t, s in res["status"].items()
                        if t in rl_status and (rl_status[t][0] == "pass") != (s == ["pass", "pass"])}
            ep_notes.append(f"rlbound and evalplus disagree on {len(disagree)} of {len(res['status'])}"
                            + (f": {disagree}" if disagree else ""))
    table(["path", "checks", "seconds", "checks/s", "inputs/s", "rl/other", "verdicts"], out,
          [38, 8, 9, 10, 10, 10, 30])
    if failed:
        print(f"rlbound verdicts not pass (status, base verdict): {failed}")
    for line in ep_notes:
        print(line)
    print("(rl/other: rlbound's checks/s over that row's; above 1, rlbound is faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="2,4,8", help="pool sizes for part 1, comma-separated")
    parser.add_argument("--batch-workers", type=int, default=None,
                        help="pool size for parts 3 and 4 (default: CodeVerifier's, 2 x CPU count)")
    parser.add_argument("--limit", type=int, default=None, help="first N problems only (evalplus CLI skipped)")
    parser.add_argument("--n", type=int, default=64, help="completions per problem in part 3")
    parser.add_argument("--nocache-sample", type=int, default=1500,
                        help="samples timed with the cache defeated in part 3 (0: all)")
    parser.add_argument("--reps", type=int, default=40, help="runs per path in part 2")
    parser.add_argument("--skip-evalplus", action="store_true", help="do not run evalplus in part 4")
    parser.add_argument("--evalplus", default=None,
                        help=f"evalplus's venv, its python or its bin/evalplus.evaluate (default {DEFAULT_EVALPLUS})")
    parser.add_argument("--evalplus-parallel", type=int, default=None,
                        help="evalplus worker processes (default: CPU count)")
    parser.add_argument("--cache-dir", default=None,
                        help="RLBOUND_CACHE (and evalplus's cache) for this run; default a fresh temporary "
                             "folder, removed afterwards, so task loads are cold")
    parser.add_argument("--parts", default="1,2,3,4", help="which parts to run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    temporary = args.cache_dir is None
    cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="rlbound-bench-code-")).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["RLBOUND_CACHE"] = str(cache)
    work = Path(tempfile.mkdtemp(prefix="bench-code-work-"))
    from rlbound.progress import set_quiet
    from rlbound.verify.code import CodeVerifier, sandbox_python_version

    set_quiet(True)
    parts = {int(p) for p in args.parts.split(",") if p.strip()}
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    batch_workers = args.batch_workers or CodeVerifier().workers
    rows = read_rows(args.limit)
    try:
        warm = (cache / "code-expected").is_dir()
        task, load_s = load("humaneval", args.limit)
        _, again_s = load("humaneval", args.limit)
        print(f"{os.cpu_count()} CPUs, sandbox {sandbox_python_version()}, RLBOUND_CACHE={cache}; humaneval: "
              f"{len(task.problems)} problems, load {load_s:.1f}s ({'warm' if warm else 'cold: canonical outputs computed'}"
              f"), then {again_s:.2f}s from the cache; {load_note()} (other users of this machine slow every figure)")
        if 1 in parts:
            part_throughput(task, rows, worker_counts)
        if 2 in parts:
            part_overhead(task, rows, args.reps)
        if 3 in parts:
            part_cache(task, rows, args.n, batch_workers, args.nocache_sample, args.seed)
        if 4 in parts:
            part_plus(rows, args.limit, batch_workers, args.evalplus, args.skip_evalplus,
                      args.evalplus_parallel or os.cpu_count() or 1, cache, work)
        print(f"\nend: {load_note()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if temporary:
            shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
