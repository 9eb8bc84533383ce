"""The report: one self-contained HTML page plus results.json and CSV tables.

:func:`write_report` computes the report's numbers once (``report/export.py``), then writes
``report.html`` — honesty warnings first (a box, ``rlbound.analysis.honesty``), then a summary table (per run: label, model/engine/task from ``run.meta``,
problems, n, pass@1, pass@k at the largest k and maj@k — answer agreement instead for tasks with many
correct answers, such as countdown — with bootstrap intervals), the pass@k
curves with bands, a crossover statement for every run against the first (the reference, e.g.
the base model), coverage and empirical support (P/S/E/O, SRR, NDR, SDS, NSCR, ε), support at the
level of solutions (distinct correct solutions recovered, new and lost; recovery rate) and entropy
and sampling efficiency (answer / token entropy per run, ΔSE per comparison), the per-problem
accuracy histogram, perplexity distributions when runs have score files (``rlbound score``;
the caller passes them as ``perplexity``), reasoning-pattern rates per 1k tokens, pass@1 /
pass@k per problem group (the ``groups`` hook), each seed group's spread over seeds against the
spread between groups (the ``seed_groups`` hook), the full pass@k table, the RL training curves
(the ``training`` hook; the KL panel draws k1 for runs whose k3 estimate exploded) and the
caller's pipeline stages (the ``stages`` hook) — next to
``results.json``, ``passk.csv`` and ``per_problem.csv``.

The page embeds its figures as base64 PNG and its CSS inline: no scripts, no external URLs, so it
can be mailed or archived as one file. Every label and metadata string is HTML-escaped.

What it does not do: no statistics (``rlbound.analysis``), no reading of run directories (the
caller passes :class:`RunSamples`), no interactivity.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from rlbound import __version__
from rlbound.analysis.honesty import multiple_choice_counts
from rlbound.analysis.passk import ACCURACY_BINS
from rlbound.analysis.perplexity import SampleScores
from rlbound.analysis.samples import RunSamples
from rlbound.atomic import atomic_write_text
from rlbound.report.export import (  # passk_rows re-exported: the CLI's `rlbound passk` table
    ReportData,
    build_report_data,
    passk_rows,
    write_csvs,
    write_results_json,
)

__all__ = ["passk_rows", "render_html", "write_report"]
from rlbound.report.plots import (
    accuracy_histogram_png,
    entropy_pairs_png,
    passk_curves_png,
    pattern_rates_png,
    perplexity_png,
    png_data_uri,
    run_color,
    run_style,
    support_bars_png,
    training_curves_png,
)

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1400px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; display: block; overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.note { color: #666; font-size: 0.85em; } .swatch { display: inline-block; width: 0.8em;
        height: 0.8em; margin-right: 0.4em; vertical-align: baseline; }
img { max-width: 100%; } td.zero { background: #f2f2f2; color: #777; }
.warnbox { border: 2px solid #c77700; background: #fff6e5; padding: 0.5em 1em; margin: 1em 0; }
.warnbox h2 { margin-top: 0.2em; border: none; color: #8a4b00; } .warnbox li { margin: 0.2em 0; }
"""


def _e(x: object) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _val(mean: float, lo: float | None = None, hi: float | None = None) -> str:
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{mean:.3f}"
    return f'{mean:.3f} <span class="note">[{lo:.3f}, {hi:.3f}]</span>'


def _status_share(statuses: dict[str, int]) -> str:
    """Share of samples with no extracted answer and with a verifier timeout (both count as wrong)."""
    total = sum(statuses.values())
    if not total:
        return "–"
    no_answer, timeout = statuses.get("no_answer", 0), statuses.get("timeout", 0)
    return f"{no_answer / total:.1%} / {timeout / total:.1%}"


def _summary_table(data: ReportData) -> str:
    agree = any(s.many_answers and s.agreement is not None for s in data.runs)
    head = ["run", "model", "engine", "task", "problems", "n", "pass@1", "pass@k (k max)",
            "maj@k (k max) / answer agreement" if agree else "maj@k (k max)", "no answer / timeouts"]
    rows = []
    for i, s in enumerate(data.runs):
        cur = s.curve
        n_lo, n_hi = int(cur.n.min()), int(cur.n.max())
        k = s.k_max
        m1, lo1, hi1 = cur.at(1)
        mk, lok, hik = cur.at(k)
        rows.append(
            f'<tr><td class="l"><span class="swatch" style="background:{run_color(i)}"></span>{_e(s.label)}</td>'
            f'<td class="l">{_e(s.model or "–")}</td><td class="l">{_e(s.engine or "–")}</td>'
            f'<td class="l">{_e(s.task or "–")}</td><td>{cur.n_problems}</td>'
            f"<td>{n_lo if n_lo == n_hi else f'{n_lo}–{n_hi}'}</td>"
            f"<td>{_val(m1, lo1, hi1)}</td><td>pass@{k} = {_val(mk, lok, hik)}</td>"
            f"<td>{_vote_cell(s)}</td>"
            f"<td>{_status_share(s.verify_statuses)}</td></tr>"
        )
    ths = "".join(f'<th class="l">{h}</th>' if j < 4 else f"<th>{h}</th>" for j, h in enumerate(head))
    return f"<table><tr>{ths}</tr>{''.join(rows)}</table>"


def _vote_cell(s) -> str:
    """maj@k, or for a task with many correct answers its answer agreement (same / same correct answer)."""
    a = s.agreement
    if s.many_answers and a is not None:
        return (f"agreement {_val(a.mean, a.lo, a.hi)}, correct "
                f"{_val(a.mean_correct, a.lo_correct, a.hi_correct)}")
    return f"maj@{s.maj.k} = {_val(s.maj.mean, s.maj.lo, s.maj.hi)}"


def _agreement_note(data: ReportData) -> str:
    """Why some runs show answer agreement in place of maj@k ("" when none does)."""
    shown = [s for s in data.runs if s.many_answers and s.agreement is not None]
    if not shown:
        return ""
    majs = ", ".join(f"{_e(s.label)} {s.maj.mean:.3f}" for s in shown)
    return (
        '<p class="note" id="agreement">Answer agreement replaces maj@k for this task: its problems have many '
        "correct answers (countdown: any expression reaching the target), so correct samples spread over many "
        "distinct answers while a wrong one can pile up, and majority voting measures how the answers split "
        "more than whether the model solves the problem. What voting relies on is agreement between samples, "
        "measured directly: <b>agreement</b> is the probability that two of a problem's samples (drawn without "
        "replacement) give the same answer, Σ c(c−1) / (n(n−1)) over its distinct answers (unbiased for Σ p²; "
        "samples without an answer agree with nothing); <b>correct</b> is the probability that they give the "
        "same correct answer. Answers compare by their countdown normal form (3*4+5 = 5+4*3). Means over "
        f"problems, bootstrap intervals over problems. For the record, maj@k here: {majs} (results.json keeps "
        "both).</p>"
    )


def _multiple_choice_note(data: ReportData) -> str:
    """How many multiple-choice items each visual run dropped or kept ("" for other tasks)."""
    parts = []
    for s in data.runs:
        counts = multiple_choice_counts(s.meta)
        if counts is not None:
            parts.append(f"{_e(s.label)}: {counts[0]} dropped, {counts[1]} kept")
    if not parts:
        return ""
    return ('<p class="note" id="multiple-choice">Multiple-choice items (visual benchmarks): '
            + "; ".join(parts) + ". The large-k studies drop them (task option drop_multiple_choice, "
            "on by default): at large k guessing among the options solves them.</p>")


def _base_tests_table(data: ReportData) -> str:
    """pass@1 and pass@k on the base tests alone, for code runs that have them ("" otherwise)."""
    rows = []
    for s in data.runs:
        if s.base_curve is None:
            continue
        cur, k = s.base_curve, s.k_max
        m1, lo1, hi1 = cur.at(1)
        mk, lok, hik = cur.at(k)
        p1, plo, phi = s.curve.at(1)
        rows.append(f'<tr><td class="l">{_e(s.label)}</td><td>{_val(m1, lo1, hi1)}</td>'
                    f"<td>pass@{k} = {_val(mk, lok, hik)}</td><td>{_val(p1, plo, phi)}</td></tr>")
    if not rows:
        return ""
    return ("<h3>Base tests</h3><p class=\"note\">The same samples graded on the benchmark's base tests only "
            "(HumanEval's and MBPP's original tests, or a stdin/stdout task's public tests); the tables above "
            "grade on every test (the \"plus\" verdict).</p><table><tr><th class=\"l\">run</th>"
            "<th>pass@1 (base)</th><th>pass@k (base)</th><th>pass@1 (all tests)</th></tr>"
            + "".join(rows) + "</table>")


def _qa_table(data: ReportData) -> str:
    """SimpleQA's numbers for runs graded by the qa / qa-judge verifiers ("" when there are none)."""
    rows = []
    for s in data.runs:
        q = s.qa
        if q is None:
            continue
        cells = "".join(f"<td>{_val_or_na(r.mean, r.lo, r.hi)}</td>" for r in (
            q.correct, q.incorrect, q.not_attempted, q.correct_given_attempted, q.f_score))
        rows.append(f'<tr><td class="l">{_e(s.label)}</td>{cells}<td>{q.failed_checks}</td></tr>')
    if not rows:
        return ""
    return ("<h3>Factual QA (SimpleQA's numbers)</h3><p class=\"note\">Per-problem fractions of samples, averaged "
            "over problems. Not attempted: answers that decline (\"I don't know\") or are empty; correct given "
            "attempted = correct / (correct + incorrect); F-score: harmonic mean of correct and correct given "
            "attempted. Failed checks (status error or timeout, e.g. a judge reply that was no verdict) count as "
            "incorrect.</p><table><tr><th class=\"l\">run</th><th>correct</th><th>incorrect</th>"
            "<th>not attempted</th><th>correct given attempted</th><th>F-score</th><th>failed checks</th></tr>"
            + "".join(rows) + "</table>")


def _crossover_section(data: ReportData) -> str:
    if not data.comparisons:
        return '<p class="note">Only one run: nothing to compare with.</p>'
    items = []
    for cmp in data.comparisons:
        r = cmp.result
        items.append(f"<li><b>{_e(cmp.run)}</b> vs reference <b>{_e(cmp.reference)}</b> "
                     f"({r.n_problems} common problems): {_e(r.statement())}</li>")
    return (
        "<ul>" + "".join(items) + "</ul>"
        '<p class="note">A is the run that leads at pass@1 on the common problems (the reference on a '
        "tie); the crossover is the smallest k from which B's mean pass@k stays at or above A's for "
        "every integer k up to the smaller n. The interval resamples problems, the same resample for "
        "both runs.</p>"
    )


def _opt(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _val_or_na(mean: float | None, lo: float | None = None, hi: float | None = None) -> str:
    """Like :func:`_val`, but "n/a" for an undefined (None/NaN) value."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    return _val(mean, _opt(lo), _opt(hi))


def _support_section(data: ReportData) -> str:
    if not data.comparisons:
        return '<p class="note">Only one run: nothing to compare with.</p>'
    head = ["run", "reference", "k", "problems", "P", "S", "E", "O", "SRR", "NDR", "SDS", "NSCR", "ε"]
    rows, readings = [], []
    for cmp in data.comparisons:
        sup = cmp.support
        if sup is None:
            readings.append(f"<li><b>{_e(cmp.run)}</b> vs <b>{_e(cmp.reference)}</b>: {_e(cmp.note or 'not computed')}</li>")
            continue
        m = sup.metrics
        metrics = "".join(f"<td>{_val_or_na(getattr(m, name), sup.lo.get(name), sup.hi.get(name))}</td>"
                          for name in ("srr", "ndr", "sds", "nscr"))
        rows.append(
            f'<tr><td class="l">{_e(cmp.run)}</td><td class="l">{_e(cmp.reference)}</td><td>{sup.k}</td>'
            f"<td>{sup.n_problems}</td><td>{m.P}</td><td>{m.S}</td><td>{m.E}</td><td>{m.O}</td>"
            f"{metrics}<td>{sup.epsilon:.4f}</td></tr>"
        )
        readings.append(
            f"<li>At k = {sup.k}, <b>{_e(cmp.run)}</b> preserved {m.P} of <b>{_e(cmp.reference)}</b>'s "
            f"{m.P + m.S} solved problems, expanded to {m.E} new ones and lost {m.S} "
            f"({m.O} of {sup.n_problems} common problems solved by neither).</li>"
        )
    ths = "".join(f'<th class="l">{h}</th>' if j < 2 else f"<th>{_e(h)}</th>" for j, h in enumerate(head))
    table = f"<table><tr>{ths}</tr>{''.join(rows)}</table>" if rows else ""
    shown = [c for c in data.comparisons if c.support is not None]
    if shown:
        png = support_bars_png(
            [f"{c.run} vs {c.reference}" for c in shown],
            [{"P": c.support.metrics.P, "S": c.support.metrics.S, "E": c.support.metrics.E,
              "O": c.support.metrics.O} for c in shown],
            [c.support.k for c in shown],
        )
        table = f'<img alt="empirical support categories" src="{png_data_uri(png)}">' + table
    zeta = next((c.support.zeta for c in data.comparisons if c.support is not None), None)
    zeta_txt = f"ζ = {zeta:g}" if zeta is not None else "ζ"
    return (
        table + "<ul>" + "".join(readings) + "</ul>"
        '<p class="note">A problem counts as solved at budget k when at least one of its first k samples '
        "(by sample index) is correct; k is the largest budget both runs support (smallest n over their "
        "common problems). P: both solve, S: only the reference solves (shrunk), E: only the run solves "
        "(expanded), O: neither. SRR = P/(P+S), NDR = E/(P+E), SDS = their harmonic mean, "
        "NSCR = (E−S)/(P+E+S); n/a where a denominator is 0 (Wu et al. 2025). "
        f"ε = ln(1/ζ)/k with {_e(zeta_txt)}: a problem unsolved in k samples has a per-sample success "
        "rate below about ε, with miss probability ζ — not that it is impossible. Intervals resample "
        "common problems, the same resample for both runs.</p>"
    )


def _diff(d, count: bool = False) -> str:
    """A difference with its interval, marked when the interval includes 0."""
    fmt = (lambda x: f"{x:+.1f}") if count else (lambda x: f"{x:+.3f}")
    cell = fmt(d.value)
    if math.isfinite(d.lo) and math.isfinite(d.hi):
        cell += f' <span class="note">[{fmt(d.lo)}, {fmt(d.hi)}]</span>'
    return f'<td class="zero">{cell} ≈0</td>' if d.includes_zero else f"<td>{cell}</td>"


def _differences_section(data: ReportData) -> str:
    """Each run minus the reference, with intervals; differences whose interval includes 0 marked."""
    rows, flagged = [], 0
    for cmp in data.comparisons:
        d = cmp.differences
        if d is None:
            continue
        flagged += sum(1 for name in ("delta_pass@1", "delta_pass@k", "net") if d[name].includes_zero)
        rows.append(
            f'<tr><td class="l">{_e(cmp.run)}</td><td class="l">{_e(cmp.reference)}</td><td>{d.k}</td>'
            f"<td>{d.n_problems}</td>{_diff(d['delta_pass@1'])}{_diff(d['delta_pass@k'])}"
            f"{_diff(d['gained'], True)}{_diff(d['lost'], True)}{_diff(d['net'], True)}</tr>"
        )
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("k", "problems", "Δ pass@1", "Δ pass@k", "gained", "lost", "net"))
    return (
        f'<h3 id="differences">Differences from {_e(data.runs[0].label)}</h3>'
        f'<table><tr><th class="l">run</th><th class="l">reference</th>{head}</tr>{"".join(rows)}</table>'
        f'<p class="note">Run minus reference on common problems, at pass@1, pass@k and the problems solved at k '
        "(gained: only the run solves; lost: only the reference; net = gained − lost). Intervals resample "
        "common problems, the same resample for both runs and every column. <b>≈0</b> marks a difference "
        "whose interval includes 0: on these problems it cannot be told from no difference "
        f"({flagged} of the Δ pass@1, Δ pass@k and net cells here). Gained and lost are never negative, so "
        "whether the boundary moved is read from net. The intervals cover the choice of problems, not the "
        "sampling noise within one problem.</p>"
    )


def _solutions_section(data: ReportData) -> str:
    """Distinct correct solutions per comparison: recovered, new, lost ("" when none was computed)."""
    rows, notes = [], []
    for cmp in data.comparisons:
        sol = cmp.solutions
        if sol is None:
            if cmp.solutions_note:
                notes.append(f"<li><b>{_e(cmp.run)}</b> vs <b>{_e(cmp.reference)}</b>: {_e(cmp.solutions_note)}</li>")
            continue
        est = "".join(f"<td>{_val_or_na(e.value, e.lo, e.hi)}</td>" for e in (
            sol.estimates[name] for name in ("recovery_pooled", "recovery_mean", "base_diversity", "rl_diversity")))
        rows.append(
            f'<tr><td class="l">{_e(cmp.run)}</td><td class="l">{_e(cmp.reference)}</td><td>{sol.k}</td>'
            f'<td class="l">{_e(sol.key_kind)}</td><td>{sol.n_problems}</td><td>{int(sol.rl_distinct.sum())}</td>'
            f"<td>{int(sol.shared.sum())}</td><td>{int(sol.new.sum())}</td><td>{int(sol.lost.sum())}</td>{est}</tr>"
        )
    if not rows and not notes:
        return ""
    head = ("<tr><th class=\"l\">run</th><th class=\"l\">reference</th><th>k</th><th class=\"l\">same solution</th>"
            "<th>problems</th><th>run's solutions</th><th>recovered</th><th>new</th><th>lost</th>"
            "<th>recovery (pooled)</th><th>recovery (mean per problem)</th><th>solutions / problem (reference)</th>"
            "<th>solutions / problem (run)</th></tr>")
    table = f"<table>{head}{''.join(rows)}</table>" if rows else ""
    return (
        '<h3 id="solution-support">Support at the level of solutions</h3>' + table
        + ("<ul>" + "".join(notes) + "</ul>" if notes else "")
        + '<p class="note">Distinct correct solutions among each run\'s first k samples, summed over common '
        "problems. <b>Recovered</b>: the run's solutions the reference also produced; <b>new</b>: the run's "
        "solutions the reference never produced; <b>lost</b>: the reference's solutions the run never produced. "
        "Recovery = recovered / the run's solutions (pooled over problems, or the mean per problem where the run "
        "has one). Same solution: countdown answers by their normal form (commutativity and associativity "
        "ignored); other tasks by the whitespace-normalised final answer, which is answer-level — a single-answer "
        "task has about one per solved problem. Intervals resample common problems, the same resample for both "
        "runs.</p>"
    )


def _entropy_section(data: ReportData) -> str:
    rows = []
    for s in data.runs:
        a = s.answer_entropy
        ans = _val_or_na(a.mean, a.lo, a.hi) if a is not None else '<span class="note">not available</span>'
        t = s.token_entropy
        if t is not None and t.available:
            tok = _val_or_na(t.mean, t.lo, t.hi)
            if t.method.startswith("top-"):
                tok += f' <span class="note">({_e(t.method)} entropy: a lower bound)</span>'
            if t.note:
                tok += f' <span class="note">({_e(t.note)})</span>'
        else:
            tok = '<span class="note">not available</span>'
        rows.append(f'<tr><td class="l">{_e(s.label)}</td><td>{ans}</td><td>{tok}</td></tr>')
    def trio(x):
        return None if x is None or not getattr(x, "available", True) else (x.mean, x.lo, x.hi)

    png = entropy_pairs_png([s.label for s in data.runs], [trio(s.answer_entropy) for s in data.runs],
                            [trio(s.token_entropy) for s in data.runs])
    parts = [
        f'<img alt="answer and token entropy per run" src="{png_data_uri(png)}">'
        '<table><tr><th class="l">run</th><th>answer entropy (nats)</th><th>token entropy (nats)</th></tr>'
        + "".join(rows) + "</table>",
        '<p class="note">Answer entropy: per problem −Σ p ln p over the distinct extracted answers (all '
        "unextracted answers share one bucket), averaged over problems. Token entropy: the engine's mean "
        "per-token entropy per sample, averaged per problem, then over problems; over the full vocabulary, "
        "except where a run says top-K (engines that see only the K most likely tokens: the rest of the "
        "mass counts as one bucket, so the value is a lower bound).</p>",
    ]
    gaps = []
    for cmp in data.comparisons:
        g = cmp.efficiency
        if g is None:
            continue
        gaps.append(
            f'<tr><td class="l">{_e(cmp.run)}</td><td class="l">{_e(cmp.reference)}</td><td>{g.k_ref}</td>'
            f"<td>{g.n_problems}</td><td>{_val_or_na(g.base_pass_at_k_ref, g.base_lo, g.base_hi)}</td>"
            f"<td>{_val_or_na(g.rl_pass_at_1, g.rl_lo, g.rl_hi)}</td><td>{_val_or_na(g.delta, g.lo, g.hi)}</td></tr>"
        )
    if gaps:
        parts.append(
            '<table><tr><th class="l">run</th><th class="l">reference</th><th>k_ref</th><th>problems</th>'
            "<th>pass@k_ref (reference)</th><th>pass@1 (run)</th><th>ΔSE</th></tr>" + "".join(gaps) + "</table>"
            '<p class="note">Sampling-efficiency gap ΔSE = pass@k_ref(reference) − pass@1(run) over common '
            "problems (Yue et al. 2025), k_ref = min(256, largest k both runs support); intervals are a paired "
            "bootstrap over problems.</p>"
        )
    return "".join(parts)


def _histogram_table(data: ReportData) -> str:
    ths = "".join(f"<th>{_e(b)}</th>" for b in ACCURACY_BINS)
    rows = "".join(
        f'<tr><td class="l">{_e(s.label)}</td>' + "".join(f"<td>{int(v)}</td>" for v in s.histogram) + "</tr>"
        for s in data.runs
    )
    return f'<table><tr><th class="l">run \\ c/n</th>{ths}</tr>{rows}</table>'


def _passk_table(data: ReportData) -> str:
    ks = sorted({int(k) for s in data.runs for k in s.curve.ks})
    ths = "".join(f"<th>{_e(s.label)}</th>" for s in data.runs)
    rows = []
    for k in ks:
        cells = []
        for s in data.runs:
            cells.append(f"<td>{_val(*s.curve.at(k))}</td>" if k in set(s.curve.ks.tolist()) else "<td>–</td>")
        rows.append(f"<tr><td>{k}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>k</th>{ths}</tr>{''.join(rows)}</table>"


def _warnings_box(data: ReportData) -> str:
    """The honesty warnings as a visible box (a one-line note when there are none)."""
    checks = ("asked k vs n (warn when 2k > n), pass@k saturation over the last doubling of k, "
              "verifier timeouts (warn above 1 % of samples)")
    if not data.warnings:
        return f'<p class="note" id="warnings">Honesty checks passed: {_e(checks)}.</p>'
    items = "".join(f"<li>{_e(w.message)}</li>" for w in data.warnings)
    return (f'<div class="warnbox" id="warnings"><h2>Warnings ({len(data.warnings)})</h2><ul>{items}</ul>'
            f'<p class="note">Checks: {_e(checks)}.</p></div>')


def _patterns_section(data: ReportData) -> str:
    if not data.patterns:
        return '<p class="note">Not computed.</p>'
    cats = list(dict.fromkeys(c for r in data.patterns for c in r.categories))
    head = "".join(f"<th>{_e(c)} / 1k tokens</th>" for c in cats)
    rows, markers = [], {}
    for r in data.patterns:
        if not r.available:
            rows.append(f'<tr><td class="l">{_e(r.label)}</td><td colspan="{len(cats) + 2}" class="l">'
                        f'<span class="note">not available: {_e(r.note)}</span></td></tr>')
            continue
        cells = "".join(f"<td>{_val_or_na(*r.rate(c))}</td>" if c in r.categories else "<td>–</td>" for c in cats)
        rows.append(f'<tr><td class="l">{_e(r.label)}</td>{cells}<td>{r.n_samples}</td><td>{r.n_tokens}</td></tr>')
        for m, count, rate in zip(r.markers, r.marker_count, r.marker_rate):
            markers.setdefault((m.category, m.name), {})[r.label] = (int(count), float(rate))
    parts = [f'<table><tr><th class="l">run</th>{head}<th>samples</th><th>completion tokens</th></tr>'
             + "".join(rows) + "</table>"]
    shown = [r for r in data.patterns if r.available]
    if shown:
        trios = [[r.rate(c) if c in r.categories else (math.nan,) * 3 for c in cats] for r in shown]
        png = pattern_rates_png([r.label for r in shown], cats, [[t[0] for t in row] for row in trios],
                                [[t[1] for t in row] for row in trios], [[t[2] for t in row] for row in trios])
        parts.insert(0, f'<img src="{png_data_uri(png)}" alt="reasoning-pattern markers per 1k tokens per run">')
    used = [key for key, per_run in markers.items() if any(count for count, _ in per_run.values())]
    if used:
        labels = [r.label for r in data.patterns if r.available]
        ths = "".join(f"<th>{_e(label)}</th>" for label in labels)
        body = "".join(
            f'<tr><td class="l">{_e(cat)}</td><td class="l">{_e(name)}</td>'
            + "".join(f"<td>{markers[(cat, name)].get(label, (0, float('nan')))[1]:.2f} "
                      f'<span class="note">({markers[(cat, name)].get(label, (0, 0))[0]})</span></td>' for label in labels)
            + "</tr>"
            for cat, name in used
        )
        parts.append(f'<table><tr><th class="l">category</th><th class="l">marker</th>{ths}</tr>{body}</table>')
    parts.append(
        '<p class="note">Markers per 1,000 completion tokens (engine tokens): 1000 × markers / tokens over all '
        "samples; intervals resample problems. Phrases match case-insensitively at word boundaries, the "
        "longest phrase winning where two start at the same place; the lab backtrack marker is a line "
        "holding only the word <code>back</code>. Per-marker cells: rate (count).</p>"
    )
    return "".join(parts)


def _groups_section(data: ReportData) -> str:
    g = data.groups
    if g is None:
        return ""
    rows = "".join(
        f'<tr><td class="l">{_e(c.run)}</td><td class="l">{_e(c.group)}</td><td>{c.n_problems}</td>'
        f"<td>{_val_or_na(*c.pass1)}</td><td>{_val_or_na(*c.passk)}</td></tr>"
        for c in g.cells
    )
    left_out = ", ".join(f"{_e(run)}: {n}" for run, n in g.ungrouped.items() if n)
    note = f" Problems in no group (left out): {left_out}." if left_out else ""
    return (
        f'<h2>By problem group</h2><table><tr><th class="l">run</th><th class="l">group</th><th>problems</th>'
        f"<th>pass@1</th><th>pass@{g.k}</th></tr>{rows}</table>"
        f'<p class="note">k = {g.k}: the largest k every run supports on every grouped problem (smallest n); '
        f"intervals resample the group's problems.{note}</p>"
    )


KL_K3_HUGE = 10.0
"""A run whose k3 KL estimate exceeds this (nats per token) at some step has its k1 estimate drawn instead."""


def _training_curves(data: ReportData) -> tuple[dict[str, list[dict]], dict[str, str], list[str]]:
    """The curves to draw (label → rows), each drawn label's original label, and the runs drawn with k1.

    k3 (``kl``) is the trainer's KL estimate, but one token whose probability fell far below the
    start model's makes it explode (PreRL runs reached 1e5); such runs, when they logged k1
    (``kl_k1``), are drawn with k1 in the KL panel and labelled "(k1)".
    """
    curves, original, swapped = {}, {}, []
    for label, rows in data.training.items():
        k3 = [abs(r["kl"]) for r in rows if isinstance(r.get("kl"), (int, float))]
        has_k1 = any(isinstance(r.get("kl_k1"), (int, float)) for r in rows)
        if has_k1 and k3 and max(k3) > KL_K3_HUGE:
            drawn = f"{label} (k1)"
            curves[drawn] = [{**r, "kl": r.get("kl_k1")} for r in rows]
            swapped.append(label)
        else:
            drawn = label
            curves[drawn] = rows
        original[drawn] = label
    return curves, original, swapped


def _training_section(data: ReportData) -> str:
    if not data.training:
        return ""
    order = [s.label for s in data.runs]
    curves, original, swapped = _training_curves(data)
    styles = {drawn: run_style(order.index(label) if label in order else len(order) + i)
              for i, (drawn, label) in enumerate(original.items())}
    png = training_curves_png(curves, styles)
    k1_note = ""
    if swapped:
        k1_note = (f" For {', '.join(_e(x) for x in swapped)} (marked \"(k1)\"), k3 exceeded {KL_K3_HUGE:g} at some "
                   "step: k3 = r − 1 − ln r with r = π_ref/π explodes on a token whose probability fell far below "
                   "the start model's, so the panel draws the k1 estimate instead, the mean of ln(π/π_ref) over the "
                   "sampled tokens (unbiased but noisy; a step's value can be below 0).")
    return (
        '<h2>RL training</h2>'
        f'<img src="{png_data_uri(png)}" alt="per-step rollout accuracy, KL, entropy and response length of each RL run">'
        '<p class="note">Per step of each RL run, from its metrics.jsonl: the accuracy of its rollouts on training '
        'problems (a trailing 5-step mean, since each step draws other problems), the k3 estimate of the KL to the '
        'model it started from (under the step\'s conditioning: P(y) for PreRL phases), token entropy and response '
        f'length.{k1_note} metrics.jsonl holds both estimates (kl: k3, kl_k1: k1).</p>'
    )


def _seeds_section(data: ReportData) -> str:
    """Each group's spread over seeds and the between- vs within-group comparison ("" without seed groups)."""
    if not data.seeds:
        return ""
    parts = ['<h2 id="seeds">Seeds: algorithms against seed noise</h2>']
    for name, comparisons in data.seeds.items():
        metrics = [c.metric for c in comparisons]
        head = "".join(f"<th>{_e(m)}: mean</th><th>sd</th><th>min – max</th>" for m in metrics)
        rows = []
        for i, group in enumerate(comparisons[0].groups):
            cells = []
            for c in comparisons:
                g = c.groups[i]
                sd = f"{g.sd:.3f}" if g.n > 1 else "–"
                cells.append(f"<td>{g.mean:.3f}</td><td>{sd}</td><td>{g.min:.3f} – {g.max:.3f}</td>")
            rows.append(f'<tr><td class="l">{_e(group.group)}</td><td class="l">{_e(", ".join(group.labels))}</td>'
                        f"<td>{group.n}</td>{''.join(cells)}</tr>")
        readings = []
        for c in comparisons:
            extra = ""
            if c.defined:
                f_p = "n/a (SciPy not installed)" if c.p_value_f is None else f"{c.p_value_f:.3g}"
                extra = (f" (between-group sd {c.between_sd:.3f}, pooled within-group sd {c.within_sd:.3f}; "
                         + (f"all {c.assignments} assignments" if c.exact else f"{c.assignments} random assignments")
                         + f"; p from the F distribution: {f_p})")
            readings.append(f"<li>{_e(c.statement())}{_e(extra)}</li>")
        parts.append(f"<h3>{_e(name)}</h3><table><tr><th class=\"l\">group</th><th class=\"l\">runs</th>"
                     f"<th>seeds</th>{head}</tr>{''.join(rows)}</table><ul>{''.join(readings)}</ul>")
    parts.append(
        '<p class="note">Each run\'s value is its pass@k over the test problems (the unbiased estimator\'s mean, '
        "k = 1 and the set's smallest n); per group the mean over its seeds, the standard deviation over seeds "
        "(ddof 1) and the range. Are the groups distinguishable? One-way ANOVA: F = between-group mean square / "
        "pooled within-group mean square. Its p-value comes from a permutation test over the seed labels (no "
        "assumption beyond exchangeable values under \"no difference\"; exact when every distinct assignment of "
        "the values to the groups is enumerated, else 10,000 random ones); with few seeds the smallest attainable "
        "p is large (2 groups × 2 seeds: 1/3), so \"not distinguishable\" may only mean too few seeds. The "
        "F-distribution p-value assumes normal seed noise of equal variance. A seed's value includes its "
        "evaluation noise on these problems (the same problems for every run).</p>"
    )
    return "".join(parts)


def _stages_section(data: ReportData) -> str:
    if not data.stages:
        return ""
    rows = []
    for st in data.stages:
        extra = ", ".join(f"{k}={v}" for k, v in st.items() if k not in ("name", "wall_s", "cached"))
        rows.append(f'<tr><td class="l">{_e(st["name"])}</td><td>{float(st["wall_s"]):.1f}</td>'
                    f'<td class="l">{"reused from cache" if st["cached"] else "run"}</td>'
                    f'<td class="l">{_e(extra)}</td></tr>')
    total = sum(float(st["wall_s"]) for st in data.stages)
    return (
        '<h2>Stages</h2><table><tr><th class="l">stage</th><th>wall time (s)</th><th class="l">cache</th>'
        f'<th class="l">details</th></tr>{"".join(rows)}<tr><td class="l"><b>total</b></td><td>{total:.1f}</td>'
        '<td></td><td></td></tr></table>'
    )


def _perplexity_section(data: ReportData) -> str:
    """PPL of runs' samples under scoring models (``rlbound score``); empty when no run has scores."""
    if not data.perplexity:
        return ""
    pairs = data.perplexity
    png = perplexity_png([f"{p.run_label} under {p.scorer_label}" for p in pairs], [p.log_ppl for p in pairs])
    rows = []
    for p in pairs:
        q = p.quantiles
        geo = _val(p.geo_mean_ppl, math.exp(p.lo), math.exp(p.hi)) if math.isfinite(p.lo) else f"{p.geo_mean_ppl:.3f}"
        model = (p.scorer.get("identity") or {}).get("model", "")
        missing = f" ({p.n_samples_missing} without tokens)" if p.n_samples_missing else ""
        rows.append(
            f'<tr><td class="l">{_e(p.run_label)}</td><td class="l">{_e(p.scorer_label)}</td>'
            f'<td class="l">{_e(model)}</td><td>{p.n_problems}</td><td>{p.n_samples}{_e(missing)}</td>'
            f"<td>{_val(p.mean_log_ppl, p.lo, p.hi)}</td><td>{geo}</td><td>{p.median_ppl:.3f}</td>"
            f"<td>{q[0.25]:.3f} – {q[0.75]:.3f}</td><td>{q[0.05]:.3f} – {q[0.95]:.3f}</td></tr>"
        )
    head = ("<tr><th class=\"l\">run (scored)</th><th class=\"l\">scorer</th><th class=\"l\">scorer model</th>"
            "<th>problems</th><th>samples</th><th>mean log PPL</th><th>geometric-mean PPL</th><th>median PPL</th>"
            "<th>PPL 25–75 %</th><th>PPL 5–95 %</th></tr>")
    return (
        f'<h2>Perplexity</h2><img src="{png_data_uri(png)}" alt="distribution of log perplexity per run and scorer">'
        f"<table>{head}{''.join(rows)}</table>"
        '<p class="note">PPL of a sample = exp(−mean over its completion tokens of log P(y_t | x, y_&lt;t)) under '
        "the scorer, the prompt rendered as when the run was sampled (Yue et al. 2025 compare the base model's PPL "
        "of its own and of the RL model's samples). Mean log PPL: per problem the mean over samples, then over "
        "problems, with a bootstrap interval over problems; geometric-mean PPL is its exponential. Median and "
        "quantiles are over samples. Scorers with different tokenizers count different tokens.</p>"
    )


def render_html(data: ReportData) -> str:
    """The report page for already computed :class:`ReportData` (figures rendered here)."""
    curves = passk_curves_png([s.curve for s in data.runs], ci=data.ci if data.n_boot else None)
    hist = accuracy_histogram_png([s.label for s in data.runs], [s.histogram for s in data.runs])
    band = (f"{data.ci:.0%} percentile bootstrap intervals over problems ({data.n_boot} resamples, seed {data.seed})"
            if data.n_boot else "no bootstrap intervals (n_boot=0)")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(data.title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(data.title)}</h1>
<p class="note">rlbound {_e(__version__)} · {_e(data.generated_at)} · unbiased pass@k (Chen et al. 2021)
· {_e(band)}.
Numbers in brackets are interval bounds. Machine-readable copies: results.json, passk.csv, per_problem.csv.</p>
{_warnings_box(data)}
<h2>Summary</h2>
{_summary_table(data)}
{_base_tests_table(data)}
{_multiple_choice_note(data)}
{_qa_table(data)}
{_agreement_note(data)}
<p class="note">k max is each run's smallest per-problem n; maj@k: majority vote over the first k samples
(unanswered samples do not vote; ties go to the answer seen first).</p>
<h2>pass@k curves</h2>
<img src="{png_data_uri(curves)}" alt="pass@k curves with bootstrap bands, log2 k axis">
<h2>Crossover (each run vs {_e(data.runs[0].label)})</h2>
{_crossover_section(data)}
<h2>Coverage and empirical support (each run vs {_e(data.runs[0].label)})</h2>
{_support_section(data)}
{_differences_section(data)}
{_solutions_section(data)}
<h2>Entropy and sampling efficiency</h2>
{_entropy_section(data)}
<h2>Per-problem accuracy</h2>
<img src="{png_data_uri(hist)}" alt="histogram of per-problem accuracy">
{_histogram_table(data)}
<h2>Reasoning patterns</h2>
{_patterns_section(data)}
{_groups_section(data)}
{_seeds_section(data)}
{_perplexity_section(data)}
<h2>pass@k table</h2>
{_passk_table(data)}
{_training_section(data)}
{_stages_section(data)}
</body></html>
"""


def write_report(
    runs: Sequence[RunSamples],
    out_dir: str | os.PathLike,
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
) -> Path:
    """Write report.html, results.json, passk.csv and per_problem.csv into ``out_dir``; return the page's path.

    The first run is the reference for the crossover statements. ``extra_ks`` are evaluated in
    addition to k = 1, 2, 4, …, n; one above some run's n is an error, not silently skipped.
    ``groups`` (problem id → group label) adds a "By problem group" section; ``stages``
    (``{"name", "wall_s", "cached", ...}`` per pipeline stage) adds a "Stages" table.
    ``perplexity`` (score files of the runs: ``Run.scores`` from the store) adds a "Perplexity" section.
    ``training`` (RL run label → its per-step metrics) adds an "RL training" figure.
    ``seed_groups`` (set name → group → run labels, one per seed) adds a "Seeds" section.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = build_report_data(runs, extra_ks=extra_ks, title=title, n_boot=n_boot, ci=ci, seed=seed,
                             groups=groups, stages=stages, perplexity=perplexity, training=training,
                             seed_groups=seed_groups)
    write_results_json(data, out / "results.json")
    write_csvs(data, out)
    return atomic_write_text(out / "report.html", render_html(data))
