"""The report's numbers, computed once, and their machine-readable exports.

:func:`build_report_data` runs the analyses a report shows (pass@k curves with bands, maj@k at
the largest k and answer agreement, per-problem accuracy histograms, the crossover of every run against the first
run, and per comparison the coverage, empirical support and sampling-efficiency gap at the
largest common k, with the solution-level support beside it; per run the answer and token entropy) and keeps them in one :class:`ReportData`, which the HTML page (``report/html.py``), the
JSON export and the CSV tables all read, so they cannot disagree. :func:`passk_rows` gives the
rows of the CLI's ``rlbound passk`` table.

Files written here: ``results.json`` (every number, including per-problem n and c; coverage,
empirical support, solution-level support (``solution_support``), ΔSE and the paired differences
with their includes-0 flags (``differences``) per comparison under ``support_comparisons``, answer and token entropy
per run under ``entropy``; the PPL distribution per (scored run, scorer) under ``perplexity``;
honesty warnings under ``warnings``; reasoning-pattern rates per run under ``reasoning_patterns``;
pass@1 / pass@k per problem group under ``groups`` (null without the ``groups`` hook); the
caller's pipeline stages under ``stages``; answer agreement per run (``runs[i].answer_agreement``);
per set of ``seed_groups`` the groups' spread over seeds and their comparison under ``seeds``; per run graded by ``qa`` / ``qa-judge``, SimpleQA's
correct, incorrect, not attempted, correct given attempted and F-score under ``simpleqa``),
``passk.csv`` (run,k,mean,lo,hi) and ``per_problem.csv`` (run,problem_id,n,c).

What it does not do: no statistics of its own (those live in ``rlbound.analysis``), no reading
of run directories (callers pass :class:`RunSamples`), no HTML or plotting.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rlbound import __version__
from rlbound.analysis.agreement import AnswerAgreement, answer_agreement_run, has_many_correct_answers
from rlbound.analysis.coverage import Coverage, coverage
from rlbound.analysis.differences import PairedDifferences, paired_differences
from rlbound.analysis.efficiency import DEFAULT_K_REF, SamplingEfficiencyGap, sampling_efficiency_gap
from rlbound.analysis.entropy import AnswerEntropy, TokenEntropy, answer_entropy_run, token_entropy
from rlbound.analysis.groups import GroupResults, group_pass_at_k
from rlbound.analysis.honesty import (HonestyWarning, code_warnings, multiple_choice_counts,
                                      multiple_choice_warnings, run_warnings)
from rlbound.analysis.patterns import PatternRates, reasoning_patterns_run
from rlbound.analysis.passk import (
    ACCURACY_BINS,
    Crossover,
    MajAtK,
    PassAtKCurve,
    accuracy_histogram,
    crossover,
    maj_at_k_run,
    pass_at_k_curve,
)
from rlbound.analysis.perplexity import PerplexitySummary, SampleScores, perplexity_summary
from rlbound.analysis.qa import QAMetrics, is_qa_run, qa_metrics
from rlbound.analysis.samples import RunSamples, match_problem_ids
from rlbound.analysis.seeds import SeedComparison, compare_seed_runs
from rlbound.analysis.solutions import SolutionSupport, solution_key_kind, solution_support
from rlbound.analysis.support import EmpiricalSupport, empirical_support
from rlbound.atomic import atomic_write_text
from rlbound.errors import RlboundError
from rlbound.progress import progress


@dataclass
class RunSummary:
    """One run's report numbers. ``histogram[i]`` counts problems in ``ACCURACY_BINS[i]``."""

    label: str
    model: str | None
    engine: str | None
    task: str | None
    meta: dict[str, Any]
    curve: PassAtKCurve
    maj: MajAtK
    histogram: np.ndarray
    verify_statuses: dict[str, int] = field(default_factory=dict)
    """Samples per verifier status (ok, no_answer, timeout, error); timeouts count as wrong."""
    answer_entropy: AnswerEntropy | None = None
    """None when the run has no answers to measure (``answer_entropy_note`` says why)."""
    answer_entropy_note: str = ""
    token_entropy: TokenEntropy | None = None
    base_curve: PassAtKCurve | None = None
    """pass@k on the base tests alone (code benchmarks with a base subset), else None."""
    qa: QAMetrics | None = None
    """SimpleQA's numbers (correct, incorrect, not attempted, F-score) for runs graded by the qa or
    qa-judge verifier, else None."""
    agreement: AnswerAgreement | None = None
    """Answer agreement (``rlbound.analysis.agreement``); None without extracted answers or with one sample."""
    many_answers: bool = False
    """The task has many correct answers per problem (countdown): the summary shows agreement, not maj@k."""

    @property
    def k_max(self) -> int:
        return int(self.curve.ks[-1])


@dataclass
class ComparisonSummary:
    """A run compared with the reference (first) run; ``result`` says which is A and which is B.

    A is whichever leads at pass@1 on their common problems (the reference on a tie), so the
    question asked is always "does the trailing run catch up, and from which k?".
    """

    reference: str
    run: str
    result: Crossover
    k_support: int | None = None
    """Budget for coverage / support: the largest k both runs support (min n over common problems)."""
    coverage: Coverage | None = None
    """Coverage with A = the reference, B = the run, at ``k_support``."""
    support: EmpiricalSupport | None = None
    """Empirical support with base = the reference, RL = the run, at ``k_support`` (ζ = ``SUPPORT_ZETA``)."""
    solutions: SolutionSupport | None = None
    """Distinct correct solutions (base = the reference, RL = the run) at ``k_support``: recovered,
    new, lost; the key chosen from the runs' task (``solution_key_kind``)."""
    solutions_note: str = ""
    """Why ``solutions`` is missing, when it is (e.g. a run without extracted answers)."""
    efficiency: SamplingEfficiencyGap | None = None
    """ΔSE = pass@k_ref(reference) − pass@1(run), k_ref = min(256, ``k_support``)."""
    differences: PairedDifferences | None = None
    """The run minus the reference at pass@1, pass@``k_support`` and the solved boundary at
    ``k_support`` (gained, lost, net), each with its paired interval and an includes-0 flag."""
    note: str = ""
    """Why coverage / support / ΔSE are missing, when they are."""


@dataclass
class ReportData:
    """Everything a report shows; built by :func:`build_report_data`."""

    title: str
    runs: list[RunSummary]
    comparisons: list[ComparisonSummary]
    extra_ks: tuple[int, ...]
    n_boot: int
    ci: float
    seed: int
    generated_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    perplexity: list[PerplexitySummary] = field(default_factory=list)
    """PPL of a run's samples under a scoring model, one per (scored run, scorer) pair."""
    warnings: list[HonestyWarning] = field(default_factory=list)
    """Honesty warnings (``rlbound.analysis.honesty``), shown first in the report."""
    patterns: list[PatternRates] = field(default_factory=list)
    """Reasoning-pattern rates per run, parallel to ``runs``."""
    groups: GroupResults | None = None
    """pass@1 / pass@k per problem group, when the caller passed ``groups``."""
    stages: list[dict[str, Any]] = field(default_factory=list)
    """The caller's pipeline stages (name, wall_s, cached, …), shown as a table."""
    training: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per-step metrics of RL runs by label (``metrics.jsonl`` rows), drawn as training curves."""
    seeds: dict[str, list[SeedComparison]] = field(default_factory=dict)
    """Per set of ``seed_groups``: pass@1 and pass@k (k = the set's smallest n) compared between
    groups (algorithms) against the spread between each group's seeds (``rlbound.analysis.seeds``)."""


def _meta_field(meta: dict[str, Any], key: str) -> str | None:
    """``meta[key]`` (or ``meta['config'][key]``) as a short string; dicts give their name/id."""
    for source in (meta, meta.get("config") if isinstance(meta.get("config"), dict) else {}):
        value = source.get(key)
        if isinstance(value, dict):
            value = next((value[k] for k in ("name", "id", "path", "model") if value.get(k)), None)
        if value not in (None, ""):
            return str(value)
    return None


def _multiple_choice_dict(meta: dict[str, Any]) -> dict[str, int] | None:
    """Multiple-choice items a visual run dropped and kept (None for other tasks)."""
    counts = multiple_choice_counts(meta)
    return None if counts is None else {"dropped": counts[0], "kept": counts[1]}


def _check_runs(runs: Sequence[RunSamples]) -> None:
    if not runs:
        raise RlboundError("report: no runs given")
    labels = [r.label for r in runs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise RlboundError(f"report: run label {dup[0]!r} is used by more than one run; labels must be unique")
    from rlbound.store import check_same_problems

    check_same_problems([(r.label, r.meta) for r in runs])


def _pass1_on_common(a: RunSamples, b: RunSamples) -> tuple[float, float]:
    _, ia, ib = match_problem_ids(a.label, a.problem_ids, b.label, b.problem_ids, "crossover")
    return float(np.mean(a.c[ia] / a.n[ia])), float(np.mean(b.c[ib] / b.n[ib]))


SUPPORT_ZETA = 0.05
"""Miss probability ζ for the empirical-support ε = ln(1/ζ)/k shown in the report."""


def _common_k(a: RunSamples, b: RunSamples) -> int:
    """The largest k both runs support: the smallest n over their common problems."""
    _, ia, ib = match_problem_ids(a.label, a.problem_ids, b.label, b.problem_ids, "support")
    return int(min(a.n[ia].min(), b.n[ib].min()))


def _entropies(run: RunSamples, n_boot: int, ci: float, seed: int) -> tuple[AnswerEntropy | None, str, TokenEntropy]:
    ans: AnswerEntropy | None = None
    note = ""
    if not run.answers or len(run.answers) != len(run.problem_ids):
        note = "no extracted answers recorded for this run"
    else:
        try:
            ans = answer_entropy_run(run, n_boot=n_boot, ci=ci, seed=seed)
        except RlboundError as exc:
            note = str(exc)
    return ans, note, token_entropy(run, n_boot=n_boot, ci=ci, seed=seed)


def _support_comparison(cmp: ComparisonSummary, ref: RunSamples, run: RunSamples,
                        n_boot: int, ci: float, seed: int) -> None:
    """Fill ``cmp``'s coverage, empirical support and ΔSE at the largest common k (reference = base)."""
    k = _common_k(ref, run)
    cmp.k_support = k
    if k < 1:
        cmp.note = "some common problem has no samples: coverage, support and ΔSE not computed"
        return
    cmp.coverage = coverage(ref, run, k)
    cmp.support = empirical_support(ref, run, k, SUPPORT_ZETA, n_boot=n_boot, ci=ci, seed=seed)
    try:
        cmp.solutions = solution_support(ref, run, k, solution_key_kind(ref.meta, run.meta),
                                         n_boot=n_boot, ci=ci, seed=seed)
    except RlboundError as exc:
        cmp.solutions_note = str(exc)
    cmp.efficiency = sampling_efficiency_gap(ref, run, min(DEFAULT_K_REF, k), n_boot=n_boot, ci=ci, seed=seed)
    cmp.differences = paired_differences(ref, run, k, n_boot=n_boot, ci=ci, seed=seed)


def build_report_data(
    runs: Sequence[RunSamples],
    *,
    extra_ks: Sequence[int] = (),
    title: str | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
    stages: Sequence[Mapping[str, Any]] | None = None,
    perplexity: Sequence[SampleScores] = (),
    training: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    seed_groups: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
) -> ReportData:
    """Run every analysis the report shows; the first run is the reference for comparisons.

    ``groups`` maps problem id → group label (a "By problem group" section: per run and group,
    pass@1 and pass@k at the largest common k); ``stages`` lists the caller's pipeline stages as
    ``{"name": str, "wall_s": float, "cached": bool, ...}`` (a "Stages" table); ``training`` maps
    an RL run's label to its per-step metrics (rows with ``step``; an "RL training" figure);
    ``seed_groups`` maps a set name to groups (e.g. algorithms) of run labels, one run per seed
    (a "Seeds" section: each group's spread over seeds and whether the groups differ by more).
    """
    _check_runs(runs)
    seed_runs = check_seed_groups(seed_groups, runs)
    stage_rows = check_stages(stages)
    training_rows = check_training(training)
    extra = tuple(sorted({int(k) for k in extra_ks}))
    summaries: list[RunSummary] = []
    comparisons: list[ComparisonSummary] = []
    with progress("report", total=2 * len(runs) - 1, unit="analyses") as bar:
        for run in runs:
            curve = pass_at_k_curve(run, extra_ks=extra, n_boot=n_boot, ci=ci, seed=seed)
            k_max = int(curve.ks[-1])
            maj = maj_at_k_run(run, k_max, n_boot=n_boot, ci=ci, seed=seed)
            meta = dict(run.meta or {})
            ans, ans_note, tok = _entropies(run, n_boot, ci, seed)
            summaries.append(RunSummary(
                run.label, _meta_field(meta, "model"), _meta_field(meta, "engine"), _meta_field(meta, "task"),
                meta, curve, maj, accuracy_histogram(run.n, run.c),
                dict(Counter(status for statuses in run.statuses for status in statuses)),
                ans, ans_note, tok,
                pass_at_k_curve(run.base_view(), extra_ks=extra, n_boot=n_boot, ci=ci, seed=seed)
                if run.correct_base else None,
            ))
            if is_qa_run(meta) and len(run.statuses) == len(run.problem_ids):
                summaries[-1].qa = qa_metrics(run, n_boot=n_boot, ci=ci, seed=seed)
            summaries[-1].many_answers = has_many_correct_answers(meta)
            try:
                summaries[-1].agreement = answer_agreement_run(run, n_boot=n_boot, ci=ci, seed=seed)
            except RlboundError:  # no extracted answers, or a problem with one sample
                pass
            bar.advance()
        ref = runs[0]
        for run in runs[1:]:
            p_ref, p_run = _pass1_on_common(ref, run)
            a, b = (ref, run) if p_ref >= p_run else (run, ref)
            result = crossover(a, b, n_boot=n_boot, ci=ci, seed=seed)
            cmp = ComparisonSummary(ref.label, run.label, result)
            _support_comparison(cmp, ref, run, n_boot, ci, seed)
            comparisons.append(cmp)
            bar.advance()
    default_title = "rlbound report: " + " vs ".join(r.label for r in runs)
    data = ReportData(title or default_title, summaries, comparisons, extra, int(n_boot), float(ci), int(seed))
    data.warnings = [w for s in summaries for w in run_warnings(s.label, s.curve.n, s.curve.c, s.verify_statuses, extra)]
    data.warnings += [w for s in summaries for w in code_warnings(s.label, s.meta, s.verify_statuses)]
    data.warnings += [w for s in summaries for w in multiple_choice_warnings(s.label, s.meta)]
    data.patterns = [reasoning_patterns_run(run, n_boot=n_boot, ci=ci, seed=seed) for run in runs]
    if groups is not None:
        data.groups = group_pass_at_k(runs, groups, n_boot=n_boot, ci=ci, seed=seed)
    data.stages = stage_rows
    data.training = training_rows
    for name, groups_of_set in seed_runs.items():
        k = int(min(run.n.min() for group in groups_of_set.values() for run in group))
        data.seeds[name] = compare_seed_runs(groups_of_set, sorted({1, k}), seed=seed)
    # ``perplexity``: score files of the runs (``Run.scores``, written by ``rlbound score``)
    data.perplexity = [perplexity_summary(s, n_boot=n_boot, ci=ci, seed=seed) for s in perplexity]
    return data


def check_training(training: Mapping[str, Sequence[Mapping[str, Any]]] | None) -> dict[str, list[dict[str, Any]]]:
    """Training metrics as plain dicts; every row needs an integer ``step``."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for label, rows in (training or {}).items():
        curves[str(label)] = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping) or isinstance(row.get("step"), bool) or not isinstance(row.get("step"), int):
                raise RlboundError(f"report: training row {i} of {label!r} needs an integer 'step'")
            curves[str(label)].append(dict(row))
    return curves


def check_seed_groups(seed_groups: Mapping[str, Mapping[str, Sequence[str]]] | None,
                      runs: Sequence[RunSamples]) -> dict[str, dict[str, list[RunSamples]]]:
    """The runs of each set's groups; every label must be a run's, and in one group of its set."""
    by_label = {run.label: run for run in runs}
    sets: dict[str, dict[str, list[RunSamples]]] = {}
    for name, groups in (seed_groups or {}).items():
        if not isinstance(groups, Mapping) or not groups:
            raise RlboundError(f"report: seed group set {name!r} must map group names to run labels")
        seen: set[str] = set()
        sets[str(name)] = {}
        for group, labels in groups.items():
            if isinstance(labels, str) or not labels:
                raise RlboundError(f"report: seed group {group!r} needs a list of run labels")
            for label in labels:
                if label not in by_label:
                    raise RlboundError(f"report: seed group {group!r} names run {label!r}, which is not a run here")
                if label in seen:
                    raise RlboundError(f"report: run {label!r} is in two seed groups of {name!r}")
                seen.add(label)
            sets[str(name)][str(group)] = [by_label[label] for label in labels]
    return sets


def check_stages(stages: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Stages as plain dicts; each needs ``name`` (str), ``wall_s`` (number >= 0) and ``cached`` (bool)."""
    rows = []
    for i, stage in enumerate(stages or ()):
        if not isinstance(stage, Mapping):
            raise RlboundError(f"report: stage {i} must be a mapping with name, wall_s and cached")
        name, wall, cached = stage.get("name"), stage.get("wall_s"), stage.get("cached")
        if not isinstance(name, str) or not name:
            raise RlboundError(f"report: stage {i} needs a non-empty string 'name'")
        if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not math.isfinite(wall) or wall < 0:
            raise RlboundError(f"report: stage {name!r} needs 'wall_s', a number of seconds >= 0 (got {wall!r})")
        if not isinstance(cached, bool):
            raise RlboundError(f"report: stage {name!r} needs 'cached', true or false (got {cached!r})")
        rows.append(dict(stage))
    return rows


# --------------------------------------------------------------------------- JSON


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays unwrapped, NaN/inf → null, unknown objects → str."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def results_dict(data: ReportData) -> dict[str, Any]:
    """All of the report's numbers as plain JSON values (the content of ``results.json``)."""
    runs = []
    for s in data.runs:
        runs.append({
            "label": s.label,
            "model": s.model,
            "engine": s.engine,
            "task": s.task,
            "meta": s.meta,
            "n_problems": s.curve.n_problems,
            "n_min": int(s.curve.n.min()),
            "n_max": int(s.curve.n.max()),
            "pass_at_k": s.curve.to_dict()["points"],
            "maj_at_k": s.maj.to_dict(),
            "answer_agreement": s.agreement.to_dict() if s.agreement is not None else None,
            "many_correct_answers": s.many_answers,
            "verify_statuses": s.verify_statuses,
            "pass_at_k_base_tests": s.base_curve.to_dict()["points"] if s.base_curve is not None else None,
            "simpleqa": s.qa.to_dict() if s.qa is not None else None,
            "multiple_choice": _multiple_choice_dict(s.meta),
            "accuracy_histogram": {"bins": ACCURACY_BINS, "counts": s.histogram},
            "per_problem": [
                {"problem_id": p, "n": int(n), "c": int(c)}
                for p, n, c in zip(s.curve.problem_ids, s.curve.n, s.curve.c)
            ],
        })
    crossovers = [{"reference": cmp.reference, "run": cmp.run, **cmp.result.to_dict()} for cmp in data.comparisons]
    entropy = [{
        "label": s.label,
        "answer_entropy": s.answer_entropy.to_dict() if s.answer_entropy is not None else None,
        "answer_entropy_note": s.answer_entropy_note,
        "token_entropy": s.token_entropy.to_dict() if s.token_entropy is not None else None,
    } for s in data.runs]
    support = [{
        "reference": cmp.reference,
        "run": cmp.run,
        "k": cmp.k_support,
        "k_definition": "largest k both runs support: smallest n over their common problems",
        "coverage": cmp.coverage.to_dict() if cmp.coverage is not None else None,
        "empirical_support": cmp.support.to_dict() if cmp.support is not None else None,
        "solution_support": cmp.solutions.to_dict() if cmp.solutions is not None else None,
        "solution_support_note": cmp.solutions_note,
        "sampling_efficiency_gap": cmp.efficiency.to_dict() if cmp.efficiency is not None else None,
        "differences": cmp.differences.to_dict() if cmp.differences is not None else None,
        "note": cmp.note,
    } for cmp in data.comparisons]
    return _jsonable({
        "rlbound_version": __version__,
        "title": data.title,
        "generated_at": data.generated_at,
        "settings": {"n_boot": data.n_boot, "ci": data.ci, "seed": data.seed, "extra_ks": list(data.extra_ks),
                     "bootstrap": "percentile, problems resampled with replacement"},
        "runs": runs,
        "crossovers": crossovers,
        "entropy": entropy,
        "support_comparisons": support,
        "warnings": [w.to_dict() for w in data.warnings],
        "reasoning_patterns": [r.to_dict() for r in data.patterns],
        "groups": data.groups.to_dict() if data.groups is not None else None,
        "stages": data.stages,
        "training": data.training,
        "seeds": [{"set": name, "comparisons": [c.to_dict() for c in comparisons]}
                  for name, comparisons in data.seeds.items()],
        "perplexity": [p.to_dict() for p in data.perplexity],
    })


def write_results_json(data: ReportData, path: Path) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(results_dict(data), indent=1, allow_nan=False) + "\n")
    return path


# --------------------------------------------------------------------------- CSV


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _fmt(x: float) -> str:
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def write_csvs(data: ReportData, out_dir: Path) -> list[Path]:
    """``passk.csv`` (run,k,mean,lo,hi; empty lo/hi without bootstrap) and ``per_problem.csv``."""
    out_dir = Path(out_dir)
    passk = [[s.label, int(k), _fmt(m), _fmt(lo), _fmt(hi)]
             for s in data.runs for k, m, lo, hi in zip(s.curve.ks, s.curve.mean, s.curve.lo, s.curve.hi)]
    per = [[s.label, p, int(n), int(c)]
           for s in data.runs for p, n, c in zip(s.curve.problem_ids, s.curve.n, s.curve.c)]
    paths = [out_dir / "passk.csv", out_dir / "per_problem.csv"]
    atomic_write_text(paths[0], _csv_text(["run", "k", "mean", "lo", "hi"], passk))
    atomic_write_text(paths[1], _csv_text(["run", "problem_id", "n", "c"], per))
    return paths


# --------------------------------------------------------------------------- CLI rows


def passk_rows(
    runs: Sequence[RunSamples],
    extra_ks: Sequence[int] = (),
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (run, k): ``{"run", "k", "mean", "lo", "hi", "problems"}`` (lo/hi None without bootstrap).

    For ``rlbound passk`` to print as a table or as JSON.
    """
    _check_runs(runs)
    rows = []
    for run in runs:
        curve = pass_at_k_curve(run, extra_ks=extra_ks, n_boot=n_boot, ci=ci, seed=seed)
        for point in curve.to_dict()["points"]:
            rows.append({"run": run.label, **point, "problems": curve.n_problems})
    return rows
