"""The report's figures as PNG bytes (matplotlib, Agg canvas), ready to embed as data URIs.

- :func:`passk_curves_png`: every run's mean pass@k with its bootstrap band on a log2 k axis.
- :func:`accuracy_histogram_png`: the per-problem accuracy histogram, runs side by side.
- :func:`perplexity_png`: the distribution of log PPL per (scored run, scorer) pair: overlaid
  histograms and a box plot.
- :func:`support_bars_png`: per comparison, one stacked bar of its problems split into P (both
  solve), S (only the reference), E (only the run), O (neither).
- :func:`entropy_pairs_png`: answer entropy and token entropy per run with their intervals, side
  by side.
- :func:`png_data_uri`: ``data:image/png;base64,…`` for an ``<img src>``.

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg canvas, so nothing here
touches pyplot's global state or needs a display. What it does not do: no interactive plots, no
computation (it draws the numbers it is given), no files.
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from rlbound.analysis.passk import ACCURACY_BINS, PassAtKCurve

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def run_color(i: int) -> str:
    """The colour of the i-th run, the same in every figure."""
    return _COLORS[i % len(_COLORS)]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No "Software" text chunk: keeps the bytes free of version strings and URLs.
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _text(label: str) -> str:
    """A run label as literal matplotlib text: no mathtext on "$", no legend-hiding leading "_"."""
    label = str(label).replace("$", r"\$")
    return "\u200b" + label if label.startswith("_") else label


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def passk_curves_png(curves: Sequence[PassAtKCurve], ci: float | None = None) -> bytes:
    """Mean pass@k per run (markers at its ks) with a shaded ``ci`` band, k on a log2 axis."""
    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.add_subplot()
    all_ks: set[int] = set()
    for i, cur in enumerate(curves):
        color = run_color(i)
        ks = cur.ks.astype(float)
        all_ks.update(int(k) for k in cur.ks)
        if np.all(np.isfinite(cur.lo)) and np.all(np.isfinite(cur.hi)):
            ax.fill_between(ks, cur.lo, cur.hi, color=color, alpha=0.18, linewidth=0)
        label = f"{_text(cur.label)} ({cur.n_problems} problems)"
        ax.plot(ks, cur.mean, marker="o", markersize=3.5, color=color, label=label)
    ax.set_xscale("log", base=2)
    k_hi = max(all_ks) if all_ks else 1
    ax.set_xlim(0.85, k_hi * 1.18)
    ticks = [1 << i for i in range(k_hi.bit_length()) if (1 << i) <= k_hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(round(v))}"))
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("k (samples per problem), log2 scale")
    ax.set_ylabel("pass@k (mean over problems)")
    band = f"; shaded: {ci:.0%} bootstrap band over problems" if ci else ""
    ax.set_title(f"pass@k{band}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def accuracy_histogram_png(labels: Sequence[str], counts: Sequence[np.ndarray]) -> bytes:
    """Fraction of problems per accuracy bin (``ACCURACY_BINS``), one bar group per bin."""
    fig = Figure(figsize=(8.0, 3.8))
    ax = fig.add_subplot()
    n_runs = max(len(labels), 1)
    width = 0.8 / n_runs
    x = np.arange(len(ACCURACY_BINS))
    for i, (label, cnt) in enumerate(zip(labels, counts)):
        cnt = np.asarray(cnt, dtype=float)
        frac = cnt / cnt.sum() if cnt.sum() else cnt
        ax.bar(x - 0.4 + width * (i + 0.5), frac, width=width, color=run_color(i), label=_text(label))
    ax.set_xticks(x)
    ax.set_xticklabels(ACCURACY_BINS, fontsize=8, rotation=30, ha="right")
    ax.set_xlabel("per-problem accuracy c/n")
    ax.set_ylabel("fraction of problems")
    ax.set_title("per-problem accuracy", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def perplexity_png(labels: Sequence[str], log_ppls: Sequence[np.ndarray]) -> bytes:
    """Per (run, scorer) pair, the samples' log PPL: step histograms on shared bins (left) and
    box plots with the mean marked (right)."""
    fig = Figure(figsize=(10.0, 4.0))
    ax_h, ax_b = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    values = [np.asarray(v, dtype=float)[np.isfinite(v)] for v in log_ppls]
    pooled = np.concatenate([v for v in values if v.size] or [np.zeros(1)])
    lo, hi = float(pooled.min()), float(pooled.max())
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
    for i, (label, v) in enumerate(zip(labels, values)):
        if v.size:
            ax_h.hist(v, bins=bins, histtype="step", linewidth=1.6, color=run_color(i),
                      weights=np.full(v.size, 1.0 / v.size), label=_text(label))
    ax_h.set_xlabel("log PPL = −mean token log-prob (nats)")
    ax_h.set_ylabel("fraction of samples")
    ax_h.set_title("perplexity of samples under the scorer", fontsize=10)
    ax_h.grid(True, alpha=0.3)
    ax_h.legend(fontsize=7)
    positions = np.arange(len(values))
    boxes = ax_b.boxplot([v if v.size else np.array([np.nan]) for v in values], positions=positions,
                         widths=0.6, showmeans=True, showfliers=False, patch_artist=True)
    for i, patch in enumerate(boxes["boxes"]):
        patch.set_facecolor(run_color(i))
        patch.set_alpha(0.35)
    ax_b.set_xticks(positions)
    ax_b.set_xticklabels([_text(label) for label in labels], fontsize=7, rotation=30, ha="right")
    ax_b.set_ylabel("log PPL (box: quartiles; triangle: mean)")
    ax_b.grid(True, axis="y", alpha=0.3)
    return _png(fig)


def pattern_rates_png(labels: Sequence[str], categories: Sequence[str], rates: Sequence[Sequence[float]],
                      los: Sequence[Sequence[float]], his: Sequence[Sequence[float]]) -> bytes:
    """Reasoning-pattern markers per 1k tokens: one bar group per category, a bar per run, CI whiskers.

    ``rates[i][j]`` (and ``los``/``his``) is run i's rate of ``categories[j]``; NaN bands draw no whisker.
    """
    fig = Figure(figsize=(7.0, 3.6))
    ax = fig.add_subplot()
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(categories))
    for i, (label, rate, lo, hi) in enumerate(zip(labels, rates, los, his)):
        rate, lo, hi = (np.asarray(v, dtype=float) for v in (rate, lo, hi))
        err = np.where(np.isfinite(lo) & np.isfinite(hi), np.vstack([rate - lo, hi - rate]), 0.0)
        ax.bar(x - 0.4 + width * (i + 0.5), rate, width=width, color=run_color(i), label=_text(label),
               yerr=np.clip(err, 0, None), capsize=3, error_kw={"elinewidth": 1})
    ax.set_xticks(x)
    ax.set_xticklabels([_text(c) for c in categories])
    ax.set_ylabel("markers per 1k completion tokens")
    ax.set_title("reasoning patterns (whiskers: bootstrap band over problems)", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


SUPPORT_COLORS = {"P": "#4c72b0", "S": "#dd8452", "E": "#55a868", "O": "#c8c8c8"}
SUPPORT_NAMES = {"P": "both solve (P)", "S": "reference only: shrunk (S)", "E": "run only: expanded (E)",
                 "O": "neither (O)"}


def support_bars_png(labels: Sequence[str], counts: Sequence[dict[str, int]], k: Sequence[int]) -> bytes:
    """One horizontal stacked bar per comparison: its P, S, E, O problem counts, labelled."""
    fig = Figure(figsize=(8.0, 0.7 + 0.55 * max(len(labels), 1)))
    ax = fig.add_subplot()
    y = np.arange(len(labels))[::-1]
    for row, (label, cnt) in enumerate(zip(labels, counts)):
        left = 0
        for cat in ("P", "S", "E", "O"):
            value = cnt.get(cat, 0)
            ax.barh(y[row], value, left=left, color=SUPPORT_COLORS[cat],
                    label=SUPPORT_NAMES[cat] if row == 0 else None)
            if value:
                ax.text(left + value / 2, y[row], str(value), ha="center", va="center", fontsize=8)
            left += value
    ax.set_yticks(y)
    ax.set_yticklabels([f"{_text(lab)} (k = {kk})" for lab, kk in zip(labels, k)], fontsize=8)
    ax.set_xlabel("problems")
    ax.set_title("empirical support: problems solved within k samples", fontsize=10)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(labels) < 3 else -0.2))
    return _png(fig)


def entropy_pairs_png(labels: Sequence[str], answer: Sequence[tuple[float, float, float] | None],
                      token: Sequence[tuple[float, float, float] | None]) -> bytes:
    """Answer entropy and token entropy per run (point and interval), in two panels."""
    fig = Figure(figsize=(8.0, 0.9 + 0.45 * max(len(labels), 1)))
    y = np.arange(len(labels))[::-1]
    for panel, (title, values) in enumerate((("answer entropy (nats)", answer), ("token entropy (nats)", token))):
        ax = fig.add_subplot(1, 2, panel + 1)
        for row, value in enumerate(values):
            if value is None or not np.isfinite(value[0]):
                continue
            mean, lo, hi = value
            lo = mean if lo is None or not np.isfinite(lo) else lo
            hi = mean if hi is None or not np.isfinite(hi) else hi
            ax.errorbar(mean, y[row], xerr=[[mean - lo], [hi - mean]], fmt="o", color=run_color(row), capsize=3)
        ax.set_yticks(y)
        ax.set_yticklabels([_text(lab) for lab in labels] if panel == 0 else [], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_ylim(-0.7, len(labels) - 0.3)
    return _png(fig)


TRAINING_PANELS = (("accuracy", "rollout accuracy (5-step mean)"), ("kl", "KL to the start model (k3; k1 where marked; symlog)"),
                   ("entropy", "token entropy (nats)"), ("response_length", "response length (tokens)"))


def run_style(i: int) -> tuple[str, str]:
    """Colour and line style of the i-th run: solid for the first ten, dashed for the next ten, ..."""
    return run_color(i), ("-", "--", ":", "-.")[(i // len(_COLORS)) % 4]


def training_curves_png(curves: dict[str, list[dict]], styles: dict[str, tuple[str, str]]) -> bytes:
    """Per-step metrics of RL runs (``metrics.jsonl`` rows by run label), one line per run, four panels;
    ``styles`` gives each label its (colour, line style)."""
    fig = Figure(figsize=(9.0, 6.2))
    for panel, (key, title) in enumerate(TRAINING_PANELS):
        ax = fig.add_subplot(2, 2, panel + 1)
        for label, rows in curves.items():
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if not points:
                continue
            steps, values = (np.asarray(v, dtype=float) for v in zip(*points))
            if key == "accuracy":  # rollout batches differ step to step: a trailing 5-step mean
                window = np.minimum(np.arange(1, len(values) + 1), 5)
                cumulative = np.concatenate([[0.0], np.cumsum(values)])
                values = (cumulative[1:] - cumulative[np.arange(len(values)) + 1 - window]) / window
            color, line = styles.get(label, ("#333333", "-"))
            ax.plot(steps, values, color=color, linestyle=line, label=_text(label), lw=1.3)
        if key == "kl":
            ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, ncol=min(len(labels), 7) or 1, loc="lower center",
               bbox_to_anchor=(0.5, -0.06))
    fig.tight_layout()
    return _png(fig)
