"""A name -> factory registry, keyed by the names used in the YAML files (timm style)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from study.errors import StudyError

F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[F]):
    """Factories registered under a name; an unknown name is an error listing the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "model" or "dataset", for error messages
        self._entries: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = fn
            return fn

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> F:
        if name not in self._entries:
            raise StudyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    def summary(self, name: str) -> str:
        """The first line of the factory's docstring, for `study models` / `study datasets`."""
        doc = inspect.getdoc(self._entries[name]) or ""
        return doc.splitlines()[0] if doc else ""

    def options(self, name: str) -> list[str]:
        """The keyword-only options the factory takes: config fields of the same names."""
        params = inspect.signature(self._entries[name]).parameters
        return [p.name for p in params.values() if p.kind == p.KEYWORD_ONLY]
