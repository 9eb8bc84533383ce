"""A run directory written straight through the store (no engine, no verifier), for tests."""

from __future__ import annotations

from pathlib import Path

from rlbound.store import RunWriter

CONFIG = {"task": {"name": "hand"}, "template": "raw", "engine": "none", "model": "hand-built",
          "sampling": {}, "seed": 0, "verifier": {"name": "exact"}}


def write_run(path: Path, label: str, problems: dict[str, list[tuple]]) -> Path:
    """``problems[id]`` = [(completion, token_count, correct, verify_status[, answer]), …] in sample
    order; the answer defaults to "1" for a correct sample and "0" for a wrong one."""
    n = max(len(samples) for samples in problems.values())
    rows = []
    for pid, samples in problems.items():
        for i, (text, tokens, correct, status, *answer) in enumerate(samples):
            rows.append({"problem_id": pid, "sample_idx": i, "seed": i, "completion": text,
                         "token_count": tokens, "finish_reason": "stop", "logprob_sum": -1.0,
                         "logprob_mean": -0.1, "entropy_mean": None,
                         "answer": answer[0] if answer else ("1" if correct else "0"),
                         "correct": correct, "verify_status": status})
    with RunWriter(path, CONFIG, n, label) as writer:
        writer.write_shard(rows)
    return Path(path)
