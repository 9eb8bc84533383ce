"""Running the contamination probe: partial problems → greedy continuations → scores → probe.json.

:func:`run_probe` cuts every problem's text at each prompt share (40 / 60 / 80 % of its words by
default, :func:`rlbound.analysis.contamination.split_prompt`), asks the engine for one greedy
continuation of each cut text (temperature 0, rendered with the ``raw`` template unless told
otherwise, so the model continues the text rather than answers a question), and scores it:
exact match and ROUGE-L F1 of the continuation against the rest of the text, and the task's
verifier applied to the continuation (answer accuracy from a partial prompt, graded by
:func:`rlbound.verify.pool.verify_batch`). :func:`write_probe` stores the result as
``probe.json`` (settings, summary per share, and every continuation) in an output directory.

What it does not do: no sampling at temperature > 0, no resuming (a probe is one greedy pass;
rerunning recomputes and replaces probe.json), no report page of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from rlbound.analysis.contamination import (
    DEFAULT_PERCENTS,
    ProbeShare,
    continuation_scores,
    probe_summary,
    split_prompt,
)
from rlbound.atomic import atomic_write_text
from rlbound.engines.base import Engine, SamplingParams, sample_seed
from rlbound.errors import RlboundError
from rlbound.progress import progress
from rlbound.store import package_versions
from rlbound.tasks.base import Task
from rlbound.tasks.templates import get_template
from rlbound.verify.base import Verifier
from rlbound.verify.pool import VerifyCache, verify_batch

PROBE_FILE = "probe.json"


@dataclass
class ProbeResult:
    """A finished probe: its settings, one :class:`ProbeShare` per prompt share, every row."""

    settings: dict[str, Any]
    shares: list[ProbeShare]
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Problems whose text has fewer than two words (nothing to cut)."""

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "summary": [s.to_dict() for s in self.shares],
                "skipped_problems": self.skipped, "problems": self.rows}


def run_probe(
    task: Task,
    engine: Engine,
    verifier: Verifier,
    *,
    percents: Sequence[float] = DEFAULT_PERCENTS,
    max_tokens: int = 512,
    template: str = "raw",
    batch_problems: int = 64,
    verify_timeout_s: float = 5.0,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> ProbeResult:
    """The contamination probe of ``engine`` on ``task`` (see the module docstring)."""
    percents = sorted({float(p) for p in percents})
    if not percents:
        raise RlboundError("probe: give at least one prompt share (--percent)")
    for p in percents:
        if not 0 < p < 100:
            raise RlboundError(f"probe: --percent must be between 0 and 100 (exclusive), got {p:g}")
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    prompt_template = get_template(template)
    problems = [p for p in task.problems if len(p.prompt.split()) >= 2]
    skipped = [p.id for p in task.problems if len(p.prompt.split()) < 2]
    if not problems:
        raise RlboundError(f"probe: no problem of task {task.name!r} has two or more words to cut")
    jobs = [(problem, pct, *split_prompt(problem.prompt, pct)) for pct in percents for problem in problems]
    continuations: list[str] = []
    with progress("probe", total=len(jobs), unit="prompts") as bar:
        for start in range(0, len(jobs), batch_problems):
            chunk = jobs[start : start + batch_problems]
            prompts = [prompt_template.render(head, engine) for _, _, head, _ in chunk]
            seeds = [[sample_seed(seed, problem.id, int(pct * 1000))] for problem, pct, _, _ in chunk]
            outputs = engine.generate(prompts, params, seeds)
            continuations += [samples[0].text for samples in outputs]
            bar.advance(len(chunk))
    verdicts = verify_batch(verifier, [verifier.reference_for(problem) for problem, *_ in jobs], continuations,
                            timeout_s=verify_timeout_s, cache=VerifyCache())
    rows = []
    for (problem, pct, head, rest), text, verdict in zip(jobs, continuations, verdicts):
        exact, rouge = continuation_scores(text, rest)
        rows.append({"problem_id": problem.id, "percent": pct, "prompt": head, "rest": rest,
                     "continuation": text, "exact_match": exact, "rouge_l_f1": rouge,
                     "answer": verdict.answer, "correct": verdict.correct, "verify_status": verdict.status})
    shares = []
    for pct in percents:
        sel = [r for r in rows if r["percent"] == pct]
        shares.append(probe_summary(pct, [r["exact_match"] for r in sel], [r["rouge_l_f1"] for r in sel],
                                    [r["correct"] for r in sel], n_boot=n_boot, ci=ci, seed=seed))
    info = engine.info()
    settings = {
        "task": {"name": task.name, "options": task.options, "problems": len(task)},
        "engine": info.engine, "model": info.model, "template": template, "verifier": verifier.name,
        "percents": percents, "split": "words: the first floor(W * percent / 100) whitespace-separated words",
        "sampling": params.to_dict(), "n_boot": n_boot, "ci": ci, "seed": seed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": package_versions(),
    }
    return ProbeResult(settings, shares, rows, skipped)


def write_probe(result: ProbeResult, out_dir: str | Path) -> Path:
    """Write ``probe.json`` into ``out_dir`` (created; an existing probe.json is replaced)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RlboundError(f"probe: --out '{out}' exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out / PROBE_FILE, json.dumps(result.to_dict(), indent=1, allow_nan=False) + "\n")
