"""Honesty warnings: what a reader should know before trusting a report's headline numbers.

Three checks, each a pure function of a run's per-problem counts or verifier statuses:

* **n too small for an asked k** (:func:`small_n_warnings`): a k the user asked for (``--k``)
  with 2k > n for some problem. The unbiased estimator averages over the C(n, k) subsets of a
  problem's n samples; once k passes n/2 those subsets overlap in most of their samples, so the
  per-problem estimate is little better than a single k-sample draw. Rule: warn when
  ``2·k > n_min``; sample n ≥ 2k to be clear of it. (k > n is not a warning but an error, raised
  by ``rlbound.analysis.passk``.) The curve's own default points (1, 2, 4, …, n) are not "asked":
  its top point k = n is reported by design and the bootstrap band already carries its noise.
* **Curve not saturated** (:func:`saturation_warning`): the last doubling of k still raises mean
  pass@k by more than ``threshold`` (default 0.02): pass@K − pass@⌊K/2⌋ > 0.02 at the curve's
  largest K. Conclusions "at large k" (who wins, whether a crossover happens) may change with
  more samples. Uses :func:`rlbound.analysis.passk.pass_at_k`; no formula of its own.
* **Verifier timeouts** (:func:`timeout_warning`): more than 1 % of a run's samples timed out in
  the verifier (timeouts count as wrong, so pass@k is biased down).

:func:`run_warnings` applies all three to one run. Runs' settings give two more: code runs graded
without the sandbox (:func:`code_warnings`) and visual runs that kept multiple-choice items
(:func:`multiple_choice_warnings`). What it does not do: no reading of runs, no
printing; the report puts the warnings at the top of report.html, in results.json
(``warnings``) and on the terminal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from rlbound.analysis.passk import pass_at_k

SATURATION_THRESHOLD = 0.02
"""Largest rise of mean pass@k over the last doubling of k that still counts as saturated."""

TIMEOUT_SHARE = 0.01
"""Largest share of verifier timeouts among a run's samples that passes without a warning."""


@dataclass(frozen=True)
class HonestyWarning:
    """One warning: ``kind`` is ``small_n``, ``not_saturated`` or ``verifier_timeouts``."""

    kind: str
    run: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def small_n_warnings(label: str, n: Sequence[int], asked_ks: Sequence[int]) -> list[HonestyWarning]:
    """One warning per asked k with 2·k > min(n) (and k ≤ min(n): larger k is an error elsewhere)."""
    n_min = int(np.min(n)) if len(n) else 0
    out = []
    for k in sorted({int(k) for k in asked_ks}):
        if 2 * k > n_min and k <= n_min:
            out.append(HonestyWarning(
                "small_n", label,
                f"run {label!r}: pass@{k} asked with only n = {n_min} samples on some problem (k > n/2): "
                f"each problem's estimate rests on heavily overlapping subsets; sample n >= {2 * k} to trust it",
            ))
    return out


def saturation_warning(
    label: str, n: Sequence[int], c: Sequence[int], k_max: int | None = None,
    threshold: float = SATURATION_THRESHOLD,
) -> HonestyWarning | None:
    """A warning when mean pass@K − pass@⌊K/2⌋ > ``threshold`` (K = ``k_max``, default min(n))."""
    n_arr, c_arr = np.asarray(n, dtype=np.int64), np.asarray(c, dtype=np.int64)
    if n_arr.size == 0:
        return None
    k = int(n_arr.min()) if k_max is None else int(k_max)
    if k < 2:
        return None
    half = k // 2
    low, high = pass_at_k(n_arr, c_arr, [half, k]).mean(axis=0)
    rise = float(high - low)
    if rise <= threshold:
        return None
    return HonestyWarning(
        "not_saturated", label,
        f"run {label!r}: the pass@k curve has not saturated: pass@{k} - pass@{half} = {rise:.3f} > {threshold:g}; "
        f"pass@k may keep rising beyond k = {k}, so conclusions at large k (who leads, a crossover) "
        "may change with more samples",
    )


def timeout_warning(label: str, statuses: Mapping[str, int], limit: float = TIMEOUT_SHARE) -> HonestyWarning | None:
    """A warning when verifier timeouts exceed ``limit`` of the run's samples."""
    total = sum(int(v) for v in statuses.values())
    timeouts = int(statuses.get("timeout", 0))
    if not total or timeouts / total <= limit:
        return None
    return HonestyWarning(
        "verifier_timeouts", label,
        f"run {label!r}: {timeouts} of {total} samples ({timeouts / total:.1%}) timed out in the verifier "
        f"(more than {limit:.0%}); they count as wrong, so pass@k is biased down: raise the verify timeout "
        "and re-verify",
    )


def run_warnings(
    label: str,
    n: Sequence[int],
    c: Sequence[int],
    statuses: Mapping[str, int],
    asked_ks: Sequence[int] = (),
    *,
    saturation_threshold: float = SATURATION_THRESHOLD,
    timeout_share: float = TIMEOUT_SHARE,
) -> list[HonestyWarning]:
    """All honesty warnings of one run, in the order small n, saturation, timeouts."""
    out = small_n_warnings(label, n, asked_ks)
    for w in (saturation_warning(label, n, c, threshold=saturation_threshold),
              timeout_warning(label, statuses, timeout_share)):
        if w is not None:
            out.append(w)
    return out


def code_warnings(label: str, meta: Mapping, statuses: Mapping[str, int]) -> list[HonestyWarning]:
    """Warnings of a code run: graded without the sandbox (``--unsafe-no-sandbox``), or with
    checks the sandbox itself failed (counted as wrong here, though not the program's fault)."""
    out = []
    settings = ((meta.get("config") or {}).get("verifier") or {}).get("settings") or {}
    if settings.get("sandbox") is False:
        out.append(HonestyWarning(
            "unsafe_no_sandbox", label,
            f"run {label!r} was graded with --unsafe-no-sandbox: its programs ran as plain processes, so "
            "a program could have changed files, reached the network or forged nothing less than its host",
        ))
    failed = int(statuses.get("sandbox_error", 0))
    if failed:
        total = sum(int(v) for v in statuses.values())
        out.append(HonestyWarning(
            "sandbox_errors", label,
            f"run {label!r}: the sandbox failed on {failed} of {total} samples; they count as wrong but are "
            "not the model's doing: fix the sandbox and run `rlbound reverify --force`",
        ))
    return out


def multiple_choice_counts(meta: Mapping) -> tuple[int, int] | None:
    """``(dropped, kept)`` multiple-choice items of a run on a visual benchmark (MathVista,
    MathVision: ``rlbound.tasks.vision`` records them in the task options), else None."""
    options = (((meta.get("config") or {}).get("task") or {}).get("options") or {})
    if "multiple_choice_dropped" not in options:
        return None
    return int(options.get("multiple_choice_dropped") or 0), int(options.get("multiple_choice_kept") or 0)


def multiple_choice_warnings(label: str, meta: Mapping) -> list[HonestyWarning]:
    """A warning for a run that kept multiple-choice items: guessing among a handful of options
    solves them at large k, so their pass@k says little about reasoning (Yue et al. 2025 dropped
    them from the large-k study; the visual tasks' ``drop_multiple_choice`` option does too)."""
    counts = multiple_choice_counts(meta)
    if counts is None or not counts[1]:
        return []
    return [HonestyWarning(
        "multiple_choice_kept", label,
        f"run {label!r} keeps {counts[1]} multiple-choice problems: at large k guessing among their options "
        "solves them, so pass@k there measures little reasoning (sample with -O drop_multiple_choice=true "
        "to leave them out, as the large-k studies did)",
    )]
