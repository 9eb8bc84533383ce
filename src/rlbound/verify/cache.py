"""The verdict cache of batch verification: check outcomes by (verifier, reference, answer key).

At large k most samples repeat a handful of final answers, so :func:`rlbound.verify.pool.verify_batch`
checks each distinct ``(verifier signature, reference, normalised answer)`` once and keeps the
outcome here; a caller that passes one :class:`VerifyCache` to every call of a run (the sampler
does) never checks an answer twice. The signature (:func:`verifier_signature`) includes the
verifier's settings, rules version included, so one cache can serve several verifiers.

What it does not do: it is in memory only (not persisted with the run), unbounded (one entry per
distinct key), and not shared between processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from rlbound.verify.base import STATUS_TIMEOUT, Verifier

__all__ = ["CacheKey", "CachedCheck", "VerifyCache", "verifier_signature"]

CacheKey = tuple[str, str, str]  # (verifier signature, reference, normalised answer)


@dataclass(frozen=True)
class CachedCheck:
    """The outcome of one check: ``correct``, ``status``, the limit it ran under, and the verdict
    on the base subset of the tests (code benchmarks; None elsewhere)."""

    correct: bool
    status: str
    timeout_s: float | None = None
    correct_base: bool | None = None


class VerifyCache:
    """Check outcomes keyed by ``(verifier signature, reference, normalised answer)``; dict-like.

    One cache can serve several verifiers (the signature keeps them apart). ``hits`` and
    ``misses`` count lookups by distinct key, ``checks`` counts the checks actually run.
    """

    def __init__(self) -> None:
        self._entries: dict[CacheKey, CachedCheck] = {}
        self.hits = 0
        self.misses = 0
        self.checks = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __getitem__(self, key: CacheKey) -> CachedCheck:
        return self._entries[key]

    def __setitem__(self, key: CacheKey, value: CachedCheck) -> None:
        self._entries[key] = value

    def __iter__(self) -> Iterator[CacheKey]:
        return iter(self._entries)

    def get(self, key: CacheKey, default: CachedCheck | None = None) -> CachedCheck | None:
        return self._entries.get(key, default)

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = self.checks = 0

    def lookup(self, key: CacheKey, timeout_s: float | None) -> CachedCheck | None:
        """The cached outcome, unless it is a timeout under a smaller limit than ``timeout_s``."""
        entry = self._entries.get(key)
        if entry is not None and entry.status == STATUS_TIMEOUT and timeout_s is not None:
            if entry.timeout_s is None or entry.timeout_s < timeout_s:
                entry = None
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def stats(self) -> dict[str, int]:
        return {"entries": len(self), "hits": self.hits, "misses": self.misses, "checks": self.checks}


def verifier_signature(verifier: Verifier) -> str:
    """A string that differs between verifiers (or settings) that may disagree on a verdict."""
    settings = sorted((str(k), repr(v)) for k, v in verifier.settings().items())
    cls = type(verifier)
    return f"{cls.__module__}.{cls.__qualname__}:{verifier.name}:{settings}"
