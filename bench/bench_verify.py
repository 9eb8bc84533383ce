"""Benchmark: verify_batch (dedup + cache + worker pool) vs calling Math-Verify once per sample.

Builds n synthetic completions per MATH-500 problem with realistic repetition: a handful of
distinct final answers (the reference in a few surface forms, a few wrong answers, one completion
with no answer) drawn with a skewed (Zipf-like) distribution, as a sampled model at large k does.
Then it times:

* ``verify_batch`` with a fresh :class:`VerifyCache`, cold (includes starting the worker pool)
  and warm (pool already running, cache empty again), then once more with the filled cache;
* the direct path: ``math_verify.parse`` on each completion + ``parse`` of the reference +
  ``math_verify.verify``, per sample, in this process. It is timed on a random subset and
  extrapolated to all samples (the output says so);
* the extraction rules alone (``extract`` + ``normalise``, the per-sample work done in the calling
  process) on the real model outputs of ``../shared/data/graded/`` (long chain-of-thought and
  tool-integrated completions), when that folder is there.

Not part of the test suite. Example::

    python bench/bench_verify.py --problems 50 --n 256 --direct-samples 300
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from rlbound.progress import set_quiet
from rlbound.verify import MathVerifier, VerifierPool, VerifyCache, verify_batch

DATA = Path("/work/shared/data/math/math500_test.jsonl")
GRADED = DATA.parents[1] / "graded"
FILLER = "Let me work through this carefully. First I set up the problem, then simplify. "


def wrong_answers(answer: str, rng: random.Random) -> list[str]:
    """A few plausible wrong answers for ``answer``."""
    try:
        value = float(answer.replace(",", ""))
    except ValueError:
        return [answer + "+1", "2" + answer if answer[:1].isdigit() else "-" + answer, "0"]
    out = []
    for candidate in (value + 1, value * 2, -value, value - rng.randint(2, 9)):
        text = str(int(candidate)) if candidate == int(candidate) else f"{candidate:g}"
        if text != answer and text not in out:
            out.append(text)
    return out[:3]


def distinct_completions(answer: str, rng: random.Random) -> list[str]:
    """Distinct completions, most likely first: right answer in several forms, wrong ones, none."""
    display_form = answer.replace("\\frac", "\\dfrac")
    right = [
        f"{FILLER}So the answer is $\\boxed{{{answer}}}$.",
        f"{FILLER}Therefore the final answer is $\\boxed{{ {display_form} }}$.",
        f"{FILLER}The answer is ${answer}$.",
    ]
    wrong = [f"{FILLER}Thus $\\boxed{{{w}}}$." for w in wrong_answers(answer, rng)]
    forms = [right[0], wrong[0], right[1], *wrong[1:], right[2], f"{FILLER}I am not sure how to finish."]
    return forms


def build(rows: list[dict], n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    references, completions = [], []
    for row in rows:
        forms = distinct_completions(row["answer"], rng)
        weights = [1.0 / (rank + 1) ** 1.3 for rank in range(len(forms))]
        rng.shuffle(weights)  # problems differ in which answer dominates
        completions += rng.choices(forms, weights=weights, k=n)
        references += [row["answer"]] * n
    return references, completions


def direct(reference: str, completion: str) -> bool:
    from math_verify import parse, verify

    gold = parse("$" + reference + "$")
    return bool(verify(gold, parse(completion)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100, help="MATH-500 problems to use")
    parser.add_argument("--n", type=int, default=256, help="completions per problem")
    parser.add_argument("--direct-samples", type=int, default=300, help="samples timed on the direct path")
    parser.add_argument("--timeout", type=float, default=5.0, help="hard limit per check (s)")
    parser.add_argument("--workers", type=int, default=None, help="pool workers (default: CPU count)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    set_quiet(True)

    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()][: args.problems]
    references, completions = build(rows, args.n, args.seed)
    total = len(completions)
    verifier = MathVerifier()
    print(f"{len(rows)} problems x n={args.n} = {total} samples, "
          f"{len(set(zip(references, completions)))} distinct completions")

    timings = []
    with VerifierPool(workers=args.workers) as pool:
        for label in ("verify_batch, cold pool", "verify_batch, warm pool"):
            cache = VerifyCache()
            start = time.perf_counter()
            verdicts = verify_batch(verifier, references, completions, timeout_s=args.timeout,
                                    cache=cache, pool=pool, workers=args.workers)
            seconds = time.perf_counter() - start
            timings.append((label, total, cache.checks, seconds, total / seconds, "measured"))
        # Extending a run (more samples, same answers): every key is already in the run's cache.
        checks_before = cache.checks
        start = time.perf_counter()
        verify_batch(verifier, references, completions, timeout_s=args.timeout, cache=cache, pool=pool)
        seconds = time.perf_counter() - start
        timings.append(("verify_batch, cache already filled", total, cache.checks - checks_before,
                        seconds, total / seconds, "measured"))
        statuses = {s: sum(v.status == s for v in verdicts) for s in ("ok", "no_answer", "timeout", "error")}
        accuracy = sum(v.correct for v in verdicts) / total

    rng = random.Random(args.seed + 1)
    subset = rng.sample(range(total), min(args.direct_samples, total))
    start = time.perf_counter()
    agree = sum(direct(references[i], completions[i]) == verdicts[i].correct for i in subset)
    seconds = time.perf_counter() - start
    rate = len(subset) / seconds
    timings.append((f"direct Math-Verify ({len(subset)} timed)", total, total, total / rate, rate,
                    "extrapolated"))

    print(f"\n{'path':<36}{'samples':>9}{'checks':>9}{'seconds':>10}{'samples/s':>12}  note")
    for label, samples, checks, secs, per_s, note in timings:
        print(f"{label:<36}{samples:>9}{checks:>9}{secs:>10.2f}{per_s:>12.1f}  {note}")
    print(f"\nspeed-up (warm) vs direct: {timings[1][4] / rate:.0f}x;  statuses {statuses};  "
          f"accuracy {accuracy:.3f};  direct agrees with verify_batch on "
          f"{agree}/{len(subset)} timed samples")

    real = [json.loads(line)["completion"] for name in ("qwen_math_cot100.jsonl", "tora_gsm8k.jsonl")
            if (GRADED / name).is_file() for line in (GRADED / name).read_text().splitlines() if line]
    if real:
        from rlbound.verify.extract import normalise

        start = time.perf_counter()
        for completion in real:
            answer = verifier.extract(completion)
            if answer is not None:
                getattr(normalise, "__wrapped__", normalise)(answer)  # uncached: every answer costs its full normalisation
        seconds = time.perf_counter() - start
        mean_chars = sum(map(len, real)) / len(real)
        print(f"extraction rules on {len(real)} real completions (mean {mean_chars:.0f} chars): "
              f"{len(real) / seconds:,.0f} completions/s")


if __name__ == "__main__":
    main()
