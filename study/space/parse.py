"""A search-space file (with CLI overrides folded in) -> one checked `StudySpec`.

Every error is a `StudyError` whose one line names the source (the file and key, or the CLI
flag); see docs/errors.md and docs/studies.md.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import yaml

from study.checks import check_field, check_value, parse_dataclass
from study.config import TrialConfig
from study.errors import StudyError, where
from study.space.checks import check_spec
from study.space.overrides import apply_overrides, check_overrides
from study.space.spec import DOMAINS, Domain, ResourcesSpec, SchedulerSpec, SearchSpec, StudySpec
from study.yaml_input import read_yaml

# Values in one grid or choice list. Each is checked as a config value, and a grid's values are
# each a set of trials: a hand-written search lists tens.
MAX_VALUES = 10_000


def load_spec(path: str, overrides: Mapping[str, Any] | None = None) -> StudySpec:
    """Read and check a search-space file; `overrides` are CLI values (see `apply_overrides`)."""
    raw = read_yaml(path, "search-space file")
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: expected a mapping of keys (name, space, ...), got {type(raw).__name__}")
    return parse_spec(raw, path, overrides or {})


def parse_spec(raw: Mapping[str, Any], source: str, overrides: Mapping[str, Any]) -> StudySpec:
    top = [f.name for f in dataclasses.fields(StudySpec) if not f.metadata.get("internal")]
    for key in raw:
        if key not in top:
            raise StudyError(f"{where(source, str(key))}unknown key; expected one of: {', '.join(top)}")
    raw = apply_overrides(dict(raw), check_overrides(overrides))
    raw.setdefault("name", os.path.splitext(os.path.basename(source))[0])
    nested = ("scheduler", "search", "resources", "variants", "space")
    spec = parse_dataclass(StudySpec, raw, source, skip=nested)
    space_raw = raw.get("space") or {}
    if not isinstance(space_raw, dict):
        raise StudyError(f"{where(source, 'space')}expected a mapping of config fields, got {space_raw!r}")
    if "dataset" in space_raw:
        raise StudyError(f"{where(source, 'space.dataset')}set the dataset at the top level (dataset: ...)")
    space = {key: parse_domain(key, value, source) for key, value in space_raw.items()}
    variants = parse_variants(raw.get("variants"), source, space)
    if spec.baseline is not None and spec.baseline not in variants:
        raise StudyError(
            f"{where(source, 'baseline')}expected one of the variants ({', '.join(variants)}), got {spec.baseline!r}"
        )
    spec = dataclasses.replace(
        spec,
        scheduler=parse_dataclass(SchedulerSpec, raw.get("scheduler"), source, "scheduler"),
        search=parse_dataclass(SearchSpec, raw.get("search"), source, "search"),
        resources=parse_dataclass(ResourcesSpec, raw.get("resources"), source, "resources"),
        variants=MappingProxyType({n: MappingProxyType(o) for n, o in variants.items()}),
        baseline=spec.baseline or (next(iter(variants)) if variants else None),
        space=MappingProxyType(space),
        source=source,
        text=yaml.safe_dump(raw, sort_keys=False),
    )
    check_spec(spec)
    return spec


def parse_domain(key: str, value: Any, source: str) -> Any:
    """A fixed value, or a one-key mapping {grid|choice|uniform|loguniform|randint: [...]}."""
    label = f"space.{key}"
    if not isinstance(value, dict):
        TrialConfig.from_dict({key: value}, source, "space")
        return value
    if key not in TrialConfig.field_names():
        TrialConfig.from_dict({key: None}, source, "space")  # the unknown-key message
    if len(value) != 1 or next(iter(value)) not in DOMAINS:
        raise StudyError(
            f"{where(source, label)}expected a value or one of {{{', '.join(DOMAINS)}: [...]}}, got {value!r}"
        )
    kind, args = next(iter(value.items()))
    label = f"{label}.{kind}"
    if not isinstance(args, list) or not args:
        raise StudyError(f"{where(source, label)}expected a non-empty list, got {args!r}")
    if kind in ("grid", "choice"):
        if len(args) > MAX_VALUES:
            raise StudyError(f"{where(source, label)}{len(args)} values; at most {MAX_VALUES} in one list")
        seen: set[tuple[str, Any]] = set()
        for v in args:
            checked = getattr(TrialConfig.from_dict({key: v}, source, label=label), key)
            # As the trial gets it (1 is 1.0 in a float field); the type keeps None apart from False.
            canonical = (type(checked).__name__, checked)
            if kind == "grid" and canonical in seen:  # the same trials twice, counted as if they were more
                raise StudyError(
                    f"{where(source, label)}{v!r} is listed twice; each value is one set of trials, "
                    "so a repeat would train the same trials again"
                )
            seen.add(canonical)
        return Domain(kind, tuple(args))
    field_type = dataclasses.fields(TrialConfig)[TrialConfig.field_names().index(key)].type
    wanted = "int" if kind == "randint" else "float"
    if field_type != wanted:
        expected = "randint (an integer field)" if field_type == "int" else f"grid or choice (a {field_type} field)"
        if field_type == "float":
            expected = "uniform or loguniform (a number field)"
        raise StudyError(f"{where(source, label)}{key} cannot be sampled with {kind}; use {expected}")
    if len(args) != 2:
        raise StudyError(f"{where(source, label)}expected [low, high], got {args!r}")
    low, high = (check_value(int if kind == "randint" else float, v, where(source, label)) for v in args)
    if not low < high:
        raise StudyError(f"{where(source, label)}expected low < high, got {args!r}")
    if kind == "loguniform" and low <= 0:
        raise StudyError(f"{where(source, label)}expected low > 0 for a log scale, got {low!r}")
    # Every value the domain can produce must be valid: both ends (randint's high is exclusive).
    for v in (low, high - 1 if kind == "randint" else high):
        TrialConfig.from_dict({key: v}, source, label=label)
    return Domain(kind, (low, high))


def parse_variants(raw: Any, source: str, space: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise StudyError(f"{where(source, 'variants')}expected a mapping of variant name -> config fields, got {raw!r}")
    variants = {}
    for name, overrides in raw.items():
        label = f"variants.{name}"
        check_field(StudySpec, "name", str(name), where(source, label))
        overrides = overrides or {}
        if not isinstance(overrides, dict):
            raise StudyError(f"{where(source, label)}expected a mapping of config fields, got {overrides!r}")
        for key in overrides:
            if isinstance(space.get(key), Domain):
                raise StudyError(f"{where(source, label + '.' + str(key))}also searched in space; set it in one place")
            if key == "dataset":
                raise StudyError(f"{where(source, label + '.dataset')}set the dataset at the top level")
        TrialConfig.from_dict(overrides, source, label)
        variants[str(name)] = dict(overrides)
    return variants
