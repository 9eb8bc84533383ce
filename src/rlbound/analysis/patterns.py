"""Reasoning-pattern counts: reflection, transition and backtracking markers per 1k tokens.

The RL-reasoning papers count how often completions say "wait", "let me check",
"alternatively", "however", … to show that a model's reasoning *style* changed (more
self-reflection, more switching of approach). This module counts configurable marker phrases in
completion texts and reports, per run, each category's rate per 1,000 completion tokens with a
percentile bootstrap interval over problems.

Matching rules (one implementation, :func:`count_markers`):

* A *phrase* marker matches case-insensitively at word boundaries: "but" counts in "But then"
  and "…, but", not in "button" or "rebut". Whitespace inside a phrase matches any run of
  whitespace ("let me  check" counts for "let me check"); curly apostrophes count as "'".
* Markers do not double-count: the text is scanned once from left to right and at each
  position the longest matching phrase wins (with both "let me check" and "let" listed,
  "let me check" counts once, for "let me check").
* A *line* marker counts lines whose whole text (stripped, case-insensitive) equals the marker.
  The lab's own backtracking marker is a line holding only the word ``back``
  (:data:`LAB_BACKTRACK`); a "back" inside a sentence does not count.

Rate of a category = 1000 × (its markers over all samples) / (completion tokens over all
samples), i.e. a ratio of totals, with tokens as counted by the engine (``RunSamples.token_counts``).
The bootstrap resamples problems (numerator and denominator together) through
:func:`rlbound.analysis.bootstrap.bootstrap_means`.

What it does not do: no semantic judgement (a "but" in "all but one" counts as a transition), no
language other than what the phrases say, no I/O (the store and the report call it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rlbound.analysis.bootstrap import bootstrap_means, check_bootstrap_args, percentile_interval
from rlbound.analysis.samples import RunSamples, json_float
from rlbound.errors import RlboundError

CATEGORIES = ("reflection", "transition", "backtracking")
"""The default categories, in report order."""


@dataclass(frozen=True)
class Marker:
    """One counted marker: ``text`` is a phrase, or a whole line when ``whole_line`` is set."""

    name: str
    category: str
    text: str
    whole_line: bool = False


DEFAULT_PHRASES: dict[str, tuple[str, ...]] = {
    "reflection": (
        "wait", "hmm", "let me check", "let's check", "let me verify", "let's verify",
        "double-check", "double check", "re-check", "recheck", "let me reconsider",
    ),
    "transition": ("alternatively", "however", "but", "on the other hand", "instead", "another approach"),
    "backtracking": (
        "let me try again", "start over", "go back", "that's wrong", "that is wrong",
        "that's not right", "i made a mistake", "backtrack",
    ),
}
"""Default phrase markers per category (override with :func:`markers_from_lists`)."""

LAB_BACKTRACK = Marker("lab backtrack", "backtracking", "back", whole_line=True)
"""The lab world's backtracking marker: a line consisting of the word ``back``."""


def markers_from_lists(
    phrases: Mapping[str, Sequence[str]], lines: Mapping[str, Sequence[str]] | None = None
) -> tuple[Marker, ...]:
    """Markers from ``{category: [phrase, …]}`` and ``{category: [whole line, …]}``.

    A line marker is named ``line "TEXT"``, except ``back`` which is the lab backtrack marker.
    Raises :class:`RlboundError` for an empty phrase or a marker listed twice.
    """
    out: list[Marker] = []
    seen: set[tuple[str, bool]] = set()
    for whole_line, mapping in ((False, phrases), (True, lines or {})):
        for category, items in mapping.items():
            if isinstance(items, str):
                raise RlboundError(f"reasoning patterns: category {category!r} must list phrases, not one string")
            for item in items:
                text = " ".join(str(item).split())
                if not text:
                    raise RlboundError(f"reasoning patterns: category {category!r} has an empty marker")
                key = (text.casefold(), whole_line)
                if key in seen:
                    raise RlboundError(f"reasoning patterns: marker {text!r} is listed more than once")
                seen.add(key)
                if whole_line:
                    name = LAB_BACKTRACK.name if text.casefold() == "back" else f'line "{text}"'
                else:
                    name = text
                out.append(Marker(name, str(category), text, whole_line))
    if not out:
        raise RlboundError("reasoning patterns: no markers given")
    return tuple(out)


DEFAULT_MARKERS: tuple[Marker, ...] = markers_from_lists(DEFAULT_PHRASES, {"backtracking": ["back"]})


def load_markers(path: str | Path) -> tuple[Marker, ...]:
    """Markers from a JSON file ``{"phrases": {category: [...]}, "lines": {category: [...]}}``."""
    p = Path(path)
    try:
        spec = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RlboundError(f"markers file '{p}' not found") from None
    except json.JSONDecodeError as exc:
        raise RlboundError(f"markers file '{p}' is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("phrases", {}), dict) \
            or not isinstance(spec.get("lines", {}), dict) or set(spec) - {"phrases", "lines"}:
        raise RlboundError(f'markers file \'{p}\' must hold {{"phrases": {{category: [...]}}, '
                           '"lines": {category: [...]}}')
    return markers_from_lists(spec.get("phrases", {}), spec.get("lines", {}))


def _phrase_pattern(text: str) -> str:
    """A phrase as a regex: its words escaped, joined by "any whitespace"."""
    return r"\s+".join(re.escape(w) for w in text.split())


class _Matcher:
    """The compiled form of a marker list: one alternation regex plus a line lookup."""

    def __init__(self, markers: Sequence[Marker]):
        self.markers = tuple(markers)
        phrases = [(i, m) for i, m in enumerate(self.markers) if not m.whole_line]
        phrases.sort(key=lambda im: -len(im[1].text))  # longest first: it wins at a shared start
        # One alternation behind a shared word-boundary check and a first-character filter (about
        # 4x faster than a boundary per branch); the text is lower-cased once instead of re.I.
        alternatives = "|".join(f"(?P<m{i}>{_phrase_pattern(m.text.lower())})" for i, m in phrases)
        first = re.escape("".join(sorted({m.text[0].lower() for _, m in phrases})))
        pattern = f"(?<!\\w)(?=[{first}])(?:{alternatives})(?!\\w)"
        self.regex = re.compile(pattern) if phrases else None
        self.lines = {m.text.casefold(): i for i, m in enumerate(self.markers) if m.whole_line}

    def count(self, text: str) -> np.ndarray:
        counts = np.zeros(len(self.markers), dtype=np.int64)
        text = text.replace("\u2019", "'")
        if self.regex is not None:
            for match in self.regex.finditer(text.lower()):
                counts[int(match.lastgroup[1:])] += 1
        if self.lines:
            for line in text.splitlines():
                i = self.lines.get(" ".join(line.split()).casefold())
                if i is not None:
                    counts[i] += 1
        return counts


def count_markers(text: str, markers: Sequence[Marker] = DEFAULT_MARKERS) -> dict[str, int]:
    """Occurrences of each marker (by name) in one text, by the module's matching rules."""
    counts = _Matcher(markers).count(text)
    return {m.name: int(c) for m, c in zip(markers, counts)}


@dataclass
class PatternRates:
    """One run's marker rates per 1,000 completion tokens, with bootstrap bands over problems.

    ``category_*`` arrays are parallel to ``categories`` and ``marker_*`` arrays to ``markers``;
    ``*_count`` are totals over all samples. When ``available`` is False (no texts or no token
    counts) the rates are NaN and ``note`` says why.
    """

    label: str
    available: bool
    categories: list[str]
    category_count: np.ndarray
    category_rate: np.ndarray
    category_lo: np.ndarray
    category_hi: np.ndarray
    markers: list[Marker]
    marker_count: np.ndarray
    marker_rate: np.ndarray
    marker_lo: np.ndarray
    marker_hi: np.ndarray
    n_problems: int
    n_samples: int
    n_tokens: int
    ci: float
    n_boot: int
    note: str = ""
    per_problem_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def rate(self, category: str) -> tuple[float, float, float]:
        """(rate per 1k tokens, lo, hi) of one category."""
        if category not in self.categories:
            raise RlboundError(f"reasoning patterns: no category {category!r} (have {self.categories})")
        j = self.categories.index(category)
        return float(self.category_rate[j]), float(self.category_lo[j]), float(self.category_hi[j])

    def to_dict(self) -> dict[str, Any]:
        def rows(names, count, rate, lo, hi, extra):
            return [{**x, "name": name, "count": int(c), "per_1k_tokens": json_float(r), "lo": json_float(a),
                     "hi": json_float(b)} for name, c, r, a, b, x in zip(names, count, rate, lo, hi, extra)]

        return {
            "label": self.label, "available": self.available, "note": self.note,
            "n_problems": self.n_problems, "n_samples": self.n_samples, "n_completion_tokens": self.n_tokens,
            "rate_definition": "1000 * markers / completion tokens, totals over all samples",
            "ci": self.ci, "n_boot": self.n_boot,
            "categories": rows(self.categories, self.category_count, self.category_rate, self.category_lo,
                               self.category_hi, [{} for _ in self.categories]),
            "markers": rows([m.name for m in self.markers], self.marker_count, self.marker_rate, self.marker_lo,
                            self.marker_hi, [{"category": m.category, "text": m.text, "whole_line": m.whole_line}
                                             for m in self.markers]),
        }


def _categories(markers: Sequence[Marker]) -> list[str]:
    extra = [m.category for m in markers if m.category not in CATEGORIES]
    return [c for c in CATEGORIES if any(m.category == c for m in markers)] + list(dict.fromkeys(extra))


def reasoning_patterns(
    texts: Sequence[Sequence[str]],
    token_counts: Sequence[Sequence[int]],
    *,
    label: str = "",
    markers: Sequence[Marker] = DEFAULT_MARKERS,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> PatternRates:
    """Marker rates per 1k completion tokens over per-problem lists of texts and token counts.

    ``texts[i][j]`` is sample j of problem i and ``token_counts[i][j]`` its completion tokens.
    Raises :class:`RlboundError` when the two disagree in shape.
    """
    check_bootstrap_args(n_boot, ci)
    markers = list(markers)
    cats = _categories(markers)
    n_m, n_c = len(markers), len(cats)
    nan_c, nan_m = np.full(n_c, np.nan), np.full(n_m, np.nan)

    def unavailable(note: str, n_samples: int = 0) -> PatternRates:
        return PatternRates(label, False, cats, np.zeros(n_c, np.int64), nan_c, nan_c.copy(), nan_c.copy(),
                            markers, np.zeros(n_m, np.int64), nan_m, nan_m.copy(), nan_m.copy(), len(texts),
                            n_samples, 0, ci, int(n_boot), note)

    if not texts:
        return unavailable("no completion texts recorded for this run")
    if len(token_counts) != len(texts):
        if not token_counts:
            return unavailable("no completion token counts recorded for this run",
                               sum(len(t) for t in texts))
        raise RlboundError(f"reasoning patterns: run {label!r} has texts for {len(texts)} problems "
                           f"but token counts for {len(token_counts)}")
    matcher = _Matcher(markers)
    per_marker = np.zeros((len(texts), n_m), dtype=np.float64)
    tokens = np.zeros(len(texts), dtype=np.float64)
    n_samples = 0
    for i, (row, toks) in enumerate(zip(texts, token_counts)):
        toks = np.asarray(toks, dtype=np.float64).reshape(-1)
        if len(row) != toks.size:
            raise RlboundError(f"reasoning patterns: run {label!r}, problem {i}: {len(row)} texts but "
                               f"{toks.size} token counts")
        for text in row:
            per_marker[i] += matcher.count(text or "")
        tokens[i] = toks.sum()
        n_samples += len(row)
    if not np.isfinite(tokens).all():  # samples imported from elsewhere (`rlbound import`) have none
        return unavailable("completion token counts are unknown for this run (imported samples)", n_samples)
    membership = np.array([[m.category == c for c in cats] for m in markers], dtype=np.float64).reshape(n_m, n_c)
    per_cat = per_marker @ membership
    total_tokens = float(tokens.sum())
    if total_tokens <= 0:
        return unavailable("the run's completions have no tokens", n_samples)
    rate_c = 1000.0 * per_cat.sum(axis=0) / total_tokens
    rate_m = 1000.0 * per_marker.sum(axis=0) / total_tokens
    reps_c, reps_m, reps_t = bootstrap_means([per_cat, per_marker, tokens], n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo_c, hi_c = percentile_interval(1000.0 * reps_c / reps_t[:, None], ci)
        lo_m, hi_m = percentile_interval(1000.0 * reps_m / reps_t[:, None], ci)
    return PatternRates(
        label, True, cats, per_cat.sum(axis=0).astype(np.int64), rate_c, lo_c, hi_c,
        markers, per_marker.sum(axis=0).astype(np.int64), rate_m, lo_m, hi_m,
        len(texts), n_samples, int(total_tokens), ci, int(n_boot), "", tokens,
    )


def reasoning_patterns_run(run: RunSamples, **kwargs: Any) -> PatternRates:
    """:func:`reasoning_patterns` over one :class:`RunSamples` (its texts and token counts)."""
    if run.texts and len(run.texts) != len(run.problem_ids):
        raise RlboundError(f"reasoning patterns: run {run.label!r} has texts for {len(run.texts)} problems "
                           f"but {len(run.problem_ids)} problems")
    return reasoning_patterns(run.texts, run.token_counts, label=run.label, **kwargs)
