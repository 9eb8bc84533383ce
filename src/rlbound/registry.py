"""Name → factory registries (tasks, engines, verifiers, templates).

Components register themselves by name with a decorator instead of being chosen in if/else
chains, so a new engine or task is one new module. Built-in entries whose modules are costly to
import (transformers, vLLM) are declared ``lazy``: their module is imported on first lookup. Looking up an unknown name raises a
:class:`~rlbound.errors.RlboundError` that lists the known names.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, Mapping, TypeVar

from rlbound.errors import RlboundError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories of one kind (``kind`` appears in error messages)."""

    def __init__(self, kind: str, lazy: Mapping[str, str] | None = None):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._lazy = dict(lazy or {})

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._entries and name in self._lazy:
            importlib.import_module(self._lazy[name])
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise RlboundError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(set(self._entries) | set(self._lazy))

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._lazy
