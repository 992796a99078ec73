"""The one mechanism that turns raw input into a typed, frozen dataclass.

Every section of a search-space file, every CLI override and Tune's `config` dict reach the
code through `parse_dataclass`. A dataclass states each field once: its type (the annotation),
its default, and its constraint (`option(default, check)`). Unknown keys, wrong types and
values out of range become one-line `StudyError`s that name the source and the key, e.g.
"space.yaml: space.lr: expected a number, got 'fast'".
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from study.errors import StudyError, where

T = TypeVar("T")
Check = Callable[[Any], "str | None"]  # returns what was expected, or None when the value is fine


def option(default: Any, check: Check | None = None) -> Any:
    """A dataclass field with a default and an optional constraint (see `parse_dataclass`)."""
    if isinstance(default, types.MappingProxyType):  # read-only already: share it
        return dataclasses.field(default_factory=lambda: default, metadata={"check": check})
    if default.__class__.__hash__ is None:  # dicts, lists: one copy per instance
        return dataclasses.field(default_factory=lambda: copy.copy(default), metadata={"check": check})
    return dataclasses.field(default=default, metadata={"check": check})


# --- constraints: each returns what was expected, or None -----------------------------------


def in_range(
    low: float | None = None, high: float | None = None, *, low_open: bool = False, what: str = "a value"
) -> Check:
    """low <= v <= high (low < v when low_open); the bounds keep absurd values out of trials."""

    def check(v: Any) -> str | None:
        below = low is not None and (v <= low if low_open else v < low)
        above = high is not None and v > high
        if not (below or above):
            return None
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {number(low)}")
        if high is not None:
            parts.append(f"<= {number(high)}")
        return f"{what} {' and '.join(parts)}"

    return check


def number(x: float) -> str:
    """100000000 rather than 1e+08, 0.99 rather than 0.9900000001."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def count(low: int, high: int) -> Check:
    """A whole number from low to high."""
    return in_range(low, high, what="an integer")


def one_of(names: Callable[[], list[str]] | tuple[str, ...]) -> Check:
    def check(v: Any) -> str | None:
        known = list(names() if callable(names) else names)
        return None if v in known else "one of " + ", ".join(known)

    return check


def each_of(names: tuple[str, ...]) -> Check:
    """A list whose items are among `names`, each at most once."""

    def check(v: Any) -> str | None:
        if all(item in names for item in v) and len(set(v)) == len(v):
            return None
        return "a list of " + ", ".join(names) + " (each at most once)"

    return check


# --- types ----------------------------------------------------------------------------------


def type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return f"a list of {type_name(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:
        return " or ".join(type_name(a) for a in args) + " or null"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[hint]


def check_value(hint: Any, value: Any, prefix: str) -> Any:
    """Return `value` as type `hint` (int -> float is allowed), or raise a one-line error."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None:
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)][0]
        return check_value(inner, value, prefix)
    if typing.get_origin(hint) is tuple:  # tuple[T, ...]: a YAML list (or the CLI's), held as a tuple
        if not isinstance(value, (list, tuple)):
            raise StudyError(f"{prefix}expected {type_name(hint)}, got {value!r}")
        return tuple(check_value(typing.get_args(hint)[0], item, prefix) for item in value)
    # numbers.* so that numpy scalars sampled by Tune's search algorithms pass too.
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, numbers.Integral) and not isinstance(value, bool),
        float: isinstance(value, numbers.Real) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint)
    if ok is None:
        raise TypeError(f"parse_dataclass does not handle fields of type {hint!r}")
    if not ok:
        raise StudyError(f"{prefix}expected {type_name(hint)}, got {value!r}")
    if hint is float and not math.isfinite(float(value)):
        raise StudyError(f"{prefix}expected a finite number, got {value!r}")
    return hint(value) if hint in (int, float) else value


def scalar_fields(cls: type) -> dict[str, Any]:
    """Field name -> type hint, for the fields `parse_dataclass` checks itself."""
    return {name: hint for name, (hint, _) in field_checks(cls).items()}


@functools.cache
def field_checks(cls: type) -> dict[str, tuple[Any, Check | None]]:
    """Field name -> (type hint, constraint), once per class: get_type_hints evaluates every
    annotation anew on each call, the bulk of checking a config."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.metadata.get("check")) for f in dataclasses.fields(cls)}


def check_field(cls: type, key: str, value: Any, at: str) -> Any:
    """Type-check and constrain one field of `cls`; `at` is the "source: key: " prefix."""
    hint, check = field_checks(cls)[key]
    checked = check_value(hint, value, at)
    if check is not None and checked is not None:
        expected = check(checked)
        if expected:
            raise StudyError(f"{at}expected {expected}, got {value!r}")
    return checked


def parse_dataclass(
    cls: type[T],
    raw: Any,
    source: str | None,
    section: str | None = None,
    label: str | None = None,
    skip: tuple[str, ...] = (),
) -> T:
    """Check a mapping against dataclass `cls` and build it; defaults come from `cls` itself.

    Args:
        cls: a dataclass whose fields are bool, int, float, str or Optional of those.
        raw: the mapping (from YAML, the CLI or Tune); None means "all defaults".
        source: where it came from (a file, "--set", "trial config"), for the message.
        section: the key path of `raw` in its source ("scheduler", "space").
        label: replaces "SECTION.KEY" in messages (e.g. "space.lr.grid" for a grid value).
        skip: fields the caller parses itself (nested sections); passed through unchecked.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise StudyError(f"{where(source, section)}expected a mapping of keys, got {raw!r}")
    known = list(field_checks(cls))
    values: dict[str, Any] = {}
    for key, value in raw.items():
        at = where(source, label or (f"{section}.{key}" if section else str(key)))
        if key not in known:
            raise StudyError(f"{at}unknown key; expected one of: {', '.join(known)}")
        values[key] = value if key in skip else check_field(cls, key, value, at)
    return cls(**values)
