"""Temperature-matched entropy: at which temperature does model B's token entropy equal run A's?

``rlbound match-temperature --model B --reference RUN_A --temperatures 0.6,0.8,1.0 --out DIR``
re-samples a subset of RUN_A's problems with model B at each temperature (:func:`rlbound.sampler.
sample_run`, on RUN_A's task, template, verifier, ``max_tokens`` and stop strings; no top-k/top-p),
measures B's token entropy there, and finds the temperature at which it reaches A's
(:func:`rlbound.analysis.entropy.match_temperature`). Each temperature's samples are a run of
their own (``DIR/T<temperature>/``, resumable); the answer goes to ``DIR/temperature_match.json``.

Which entropy, exactly. The engines record per token the entropy of the model's *untempered*
next-token distribution, which does not change with the sampling temperature except through the
positions visited. What sampling at T spreads is the *tempered* distribution softmax(z/T), so B's
entropy at T is measured on that one: each completion sampled at T is re-scored by B with its
logits divided by T (a forward hook on the engine's torch model), and the per-token full-
vocabulary entropy H(softmax(z_t/T)) is averaged over the completion's scored (text) tokens; then
per problem over its samples, then over problems (:func:`rlbound.analysis.entropy.token_entropy`).
A's target is, by default, RUN_A's stored token entropy on the same problems (same averaging):
the entropy of A's sampling distribution when RUN_A was sampled at temperature 1 with no top-k or
top-p (otherwise the result's note says it is A's untempered entropy), and covering the end-of-
sequence position where a completion ended with one. Pass a reference engine
(``--reference-model``) to re-measure A's target exactly as B's: A re-scores its own stored
completions at RUN_A's temperature, text tokens only.

What it does not do: no top-k/top-p while matching (they cut the tempered distribution; the
entropy would no longer be a function of T alone), no engines without a torch model (the hook
needs one), no extrapolation outside the temperatures tried.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from rlbound.analysis.entropy import TemperatureMatch, TokenEntropy, match_temperature, token_entropy
from rlbound.analysis.samples import RunSamples
from rlbound.atomic import atomic_write_text
from rlbound.engines.base import Engine, SamplingParams
from rlbound.errors import RlboundError
from rlbound.progress import progress
from rlbound.sampler import sample_run
from rlbound.scoring import subset_task, task_from_run, verifier_from_run
from rlbound.store import load_run, read_samples
from rlbound.tasks.templates import get_template

RESULT_FILE = "temperature_match.json"


@contextmanager
def tempered_logits(engine: Engine, temperature: float) -> Iterator[Engine]:
    """Within the block, ``engine``'s model returns logits / ``temperature`` (so ``score`` reports
    entropies and log-probabilities of the tempered distribution)."""
    import torch

    model = getattr(engine, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise RlboundError(f"engine {engine.name!r} has no torch model to temper; use the tiny or hf engine")
    if not temperature > 0:
        raise RlboundError(f"temperatures must be > 0 to match entropy, got {temperature:g}")

    def hook(_module, _args, output):
        if isinstance(output, torch.Tensor):
            return output / temperature
        logits = getattr(output, "logits", None)
        if logits is None:
            raise RlboundError(f"engine {engine.name!r}: its model's output has no logits to temper")
        output.logits = logits / temperature
        return output

    handle = model.register_forward_hook(hook)
    try:
        yield engine
    finally:
        handle.remove()


def tempered_entropy_means(
    engine: Engine, prompts: Sequence[str], completions: Sequence[str], temperature: float,
    *, chunk: int = 256, what: str = "entropy",
) -> np.ndarray:
    """Per completion: mean over its scored tokens of H(softmax(z_t / temperature)) (NaN if empty)."""
    out = np.full(len(prompts), np.nan)
    with tempered_logits(engine, temperature), progress(what, total=len(prompts), unit="samples") as bar:
        for start in range(0, len(prompts), chunk):
            scores = engine.score(list(prompts[start : start + chunk]), list(completions[start : start + chunk]))
            for j, sc in enumerate(scores):
                ent = sc.token_entropies
                if ent:
                    out[start + j] = float(np.mean(ent))
            bar.advance(len(scores))
    return out


def _grouped(path: Path, ids: list[str]) -> tuple[list[str], list[list[str]]]:
    """Completions of run ``path`` for problems ``ids``, per problem in sample-index order."""
    table = read_samples(path, columns=["problem_id", "sample_idx", "completion"])
    table = table.sort_by([("problem_id", "ascending"), ("sample_idx", "ascending")])
    by: dict[str, list[str]] = {p: [] for p in ids}
    for pid, text in zip(table.column("problem_id").to_pylist(), table.column("completion").to_pylist()):
        if pid in by:
            by[pid].append(text or "")
    keep = [p for p in ids if by[p]]
    return keep, [by[p] for p in keep]


def _entropy_of(label: str, ids: list[str], texts: list[list[str]], prompts: dict[str, str], engine: Engine,
                temperature: float, n_boot: int, seed: int, what: str) -> TokenEntropy:
    flat_p = [prompts[p] for p, ts in zip(ids, texts) for _ in ts]
    flat_c = [t for ts in texts for t in ts]
    means = tempered_entropy_means(engine, flat_p, flat_c, temperature, what=what)
    per, k = [], 0
    for ts in texts:
        per.append(means[k : k + len(ts)])
        k += len(ts)
    run = RunSamples(label, ids, [np.zeros(len(ts), dtype=bool) for ts in texts],
                     [[None] * len(ts) for ts in texts], entropy_means=per)
    return token_entropy(run, n_boot=n_boot, seed=seed)


@dataclass
class TemperatureMatchResult:
    """What :func:`run_temperature_match` found (``match`` holds the matched temperature)."""

    reference: str
    model: str
    problem_ids: list[str]
    n: int
    target: TokenEntropy
    target_definition: str
    points: list[tuple[float, TokenEntropy, str]]
    match: TemperatureMatch
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference, "model": self.model, "n": self.n,
            "problem_ids": self.problem_ids,
            "target": {**self.target.to_dict(), "definition": self.target_definition},
            "entropy_definition": "per token: full-vocabulary entropy (nats) of softmax(logits / T), "
                                  "the distribution sampled from at temperature T, over the completion's "
                                  "scored text tokens; per sample mean, per problem mean, then mean over problems",
            "points": [{"temperature": t, "run": run, **e.to_dict()} for t, e, run in self.points],
            "match": self.match.to_dict(),
            "notes": self.notes,
        }


def run_temperature_match(
    engine: Engine,
    reference: str | Path,
    temperatures: Sequence[float],
    out: str | Path,
    *,
    problems: int = 20,
    n: int = 8,
    seed: int = 0,
    reference_engine: Engine | None = None,
    n_boot: int = 1000,
) -> TemperatureMatchResult:
    """Sample ``problems`` of run ``reference``'s problems with ``engine`` at each temperature and
    match its tempered token entropy to the reference's (see the module docstring)."""
    temps = [float(t) for t in temperatures]
    if len(temps) < 2:
        raise RlboundError("--temperatures: give at least two temperatures, e.g. 0.6,0.8,1.0,1.2")
    if any(not t > 0 for t in temps):
        raise RlboundError("--temperatures: every temperature must be > 0")
    if problems < 1 or n < 1:
        raise RlboundError("--problems and --n must be >= 1")
    ref_path = Path(reference)
    ref = load_run(ref_path)
    samples = ref.samples
    if len(samples) == 0:
        raise RlboundError(f"run '{ref_path}' holds no samples yet")
    cfg = ref.meta.get("config") or {}
    sampling = cfg.get("sampling") or {}
    ids = sorted(str(p) for p in samples.problem_ids)
    if problems < len(ids):
        pick = np.sort(np.random.default_rng(seed).choice(len(ids), size=problems, replace=False))
        ids = [ids[i] for i in pick]
    task = subset_task(task_from_run(ref.meta, ref_path), ids)
    verifier = verifier_from_run(ref.meta)
    template_name = cfg.get("template") or task.template
    template = get_template(template_name)
    notes: list[str] = []

    ref_temp = float(sampling.get("temperature", 1.0))
    filtered = float(sampling.get("top_p", 1.0)) < 1.0 or int(sampling.get("top_k", 0)) > 0
    if reference_engine is not None:
        if filtered:
            notes.append("RUN_A was sampled with top-k/top-p: its target entropy is of the tempered "
                         "distribution before those filters")
        prompts_a = {p.id: template.render(p.prompt, reference_engine) for p in task.problems}
        a_ids, a_texts = _grouped(ref_path, ids)
        target = _entropy_of(ref.label, a_ids, a_texts, prompts_a, reference_engine, ref_temp, n_boot, seed,
                             "entropy (reference)")
        target_def = (f"RUN_A's samples re-scored by the reference model at RUN_A's temperature {ref_temp:g} "
                      "(the same definition as the points)")
    else:
        pos = {p: i for i, p in enumerate(samples.problem_ids)}
        sub = RunSamples(ref.label, ids, [samples.correct[pos[p]] for p in ids],
                         [samples.answers[pos[p]] for p in ids],
                         entropy_means=[samples.entropy_means[pos[p]] for p in ids] if samples.entropy_means else [])
        target = token_entropy(sub, n_boot=n_boot, seed=seed)
        target_def = ("RUN_A's stored token entropy (the engine's untempered per-token entropy along RUN_A's "
                      "samples, end-of-sequence position included)")
        if ref_temp != 1.0 or filtered:
            notes.append(f"RUN_A was sampled at temperature {ref_temp:g}"
                         + (" with top-k/top-p" if filtered else "")
                         + ": its stored entropy is of the untempered model, not of what it sampled; pass "
                           "--reference-model to re-measure it as the points are measured")
    if not target.available:
        raise RlboundError(f"run '{ref_path}' has no token entropies to match ({target.note}); "
                           "pass --reference-model to measure them")
    params_base = {"max_tokens": int(sampling.get("max_tokens", 256)), "stop": tuple(sampling.get("stop") or ())}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_label = str(engine.info().model)
    prompts_b = {p.id: template.render(p.prompt, engine) for p in task.problems}
    points = []
    for t in sorted(temps):
        run_dir = out / f"T{t:g}"
        sample_run(run_dir, task, engine, verifier, SamplingParams(temperature=t, **params_base), n,
                   seed=seed, template=template_name, label=f"{Path(model_label).name}@T={t:g}")
        b_ids, b_texts = _grouped(run_dir, ids)
        ent = _entropy_of(f"T={t:g}", b_ids, b_texts, prompts_b, engine, t, n_boot, seed, f"entropy T={t:g}")
        if not ent.available:
            raise RlboundError(f"no completion sampled at temperature {t:g} has a token to measure")
        points.append((t, ent, str(run_dir)))
    match = match_temperature([p[0] for p in points], [p[1].mean for p in points], target.mean)
    result = TemperatureMatchResult(ref.label, model_label, ids, n, target, target_def, points, match, notes)
    atomic_write_text(out / RESULT_FILE, json.dumps(result.to_dict(), indent=1, allow_nan=False) + "\n")
    return result
