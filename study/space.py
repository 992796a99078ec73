"""Search-space YAML files: parse, check every key, and convert to Ray Tune objects.

A file is read into one frozen `StudySpec` before Ray starts. Every error is a `StudyError`
whose one line names the file and the key (see docs/errors.md and README "Search-space files").
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from study.config import TrialConfig, check_value
from study.errors import StudyError, where

METRICS = ("test_acc", "test_loss", "train_acc", "train_loss")
DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")
TOP_LEVEL = (
    "name", "description", "dataset", "metric", "mode", "num_samples", "scheduler", "search",
    "resources", "max_failures", "keep_checkpoints", "variants", "baseline", "space",
)  # fmt: skip


@dataclass(frozen=True)
class Domain:
    """One searched field: `kind` is one of DOMAINS; `values` the grid/choice list or [low, high]."""

    kind: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class SchedulerSpec:
    type: str = "asha"  # asha | fifo
    max_t: int | None = None  # epochs a trial may reach; None = the space's largest `epochs`
    grace_period: int = 1  # epochs every trial runs before ASHA may stop it
    reduction_factor: float = 2  # ASHA keeps the top 1/reduction_factor at each rung


@dataclass(frozen=True)
class SearchSpec:
    type: str = "grid"  # grid | random (Tune's variant generator) | optuna (TPE)
    max_concurrent: int = 4  # optuna: trials suggested at once (ConcurrencyLimiter)
    seed: int | None = None  # random/optuna: sampler seed, for a reproducible search


@dataclass(frozen=True)
class ResourcesSpec:
    cpu: float | None = None  # CPU cores per trial; None = 1
    gpu: float | None = None  # GPUs per trial, fractions pack trials on one GPU; None = 1 if the cluster has GPUs, else 0


@dataclass(frozen=True)
class StudySpec:
    name: str
    source: str  # the YAML file it came from, for messages
    description: str = ""
    dataset: str = "cifar100"
    metric: str = "test_acc"
    mode: str = "max"
    num_samples: int = 1  # repeats of the whole grid (or samples, for random/optuna)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    max_failures: int = 2  # retries of a crashed trial, from its last checkpoint
    keep_checkpoints: int = 2  # newest checkpoints kept per trial
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: str | None = None  # the variant ablation effects are measured against
    space: dict[str, Any] = field(default_factory=dict)  # field -> fixed value | Domain
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # file + overrides

    # --- derived views

    def fixed(self) -> dict[str, Any]:
        return {k: v for k, v in self.space.items() if not isinstance(v, Domain)}

    def max_epochs(self) -> int:
        """The most epochs any trial can run: ASHA's max_t."""
        if self.scheduler.max_t is not None:
            return self.scheduler.max_t
        return max(epoch_values(self))

    def num_trials(self) -> int:
        """Trials Tune will create: grid points x variants x num_samples (optuna: num_samples)."""
        grid = 1
        for v in self.space.values():
            if isinstance(v, Domain) and v.kind == "grid":
                grid *= len(v.values)
        return grid * max(1, len(self.variants)) * self.num_samples

    def trial_configs(self) -> list[TrialConfig]:
        """Every grid point x variant with sampled domains at their lower bound (for checks)."""
        grids = {k: v.values for k, v in self.space.items() if isinstance(v, Domain) and v.kind == "grid"}
        others = {k: v.values[0] for k, v in self.space.items() if isinstance(v, Domain) and v.kind != "grid"}
        configs = []
        for combo in itertools.product(*grids.values()):
            for overrides in self.variants.values() or [{}]:
                raw = {**self.fixed(), **others, **dict(zip(grids, combo)), **overrides, "dataset": self.dataset}
                configs.append(TrialConfig.from_dict(raw, self.source, "space"))
        return configs


def epoch_values(spec: StudySpec) -> list[int]:
    values = [TrialConfig.epochs]
    raw = spec.space.get("epochs", TrialConfig.epochs)
    if isinstance(raw, Domain):
        values = list(raw.values)
    elif raw is not None:
        values = [raw]
    values += [v["epochs"] for v in spec.variants.values() if "epochs" in v]
    return values


# --- parsing -----------------------------------------------------------------------------


def load_spec(path: str, overrides: Mapping[str, Any] | None = None) -> StudySpec:
    """Read and check a search-space file; `overrides` are CLI values (see `apply_overrides`)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise StudyError(f"{path}: no such search-space file") from None
    except IsADirectoryError:
        raise StudyError(f"{path}: is a folder; give a .yaml file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyError(f"{path}: {line}YAML syntax error: {problem}") from None
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: expected a mapping of keys (name, space, ...), got {type(raw).__name__}")
    return parse_spec(raw, path, overrides or {})


def parse_spec(raw: Mapping[str, Any], source: str, overrides: Mapping[str, Any]) -> StudySpec:
    for key in raw:
        if key not in TOP_LEVEL:
            raise StudyError(f"{where(source, str(key))}unknown key; expected one of: {', '.join(TOP_LEVEL)}")
    raw = apply_overrides(dict(raw), overrides)
    default_name = os.path.splitext(os.path.basename(source))[0]
    name = _typed(raw, "name", str, source, default_name)
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise StudyError(f"{where(source, 'name')}expected a folder-safe name (no spaces or slashes), got {name!r}")

    space_raw = raw.get("space") or {}
    if not isinstance(space_raw, dict):
        raise StudyError(f"{where(source, 'space')}expected a mapping of config fields, got {space_raw!r}")
    if "dataset" in space_raw:
        raise StudyError(f"{where(source, 'space.dataset')}set the dataset at the top level (dataset: ...)")
    space = {key: parse_domain(key, value, source) for key, value in space_raw.items()}

    variants = parse_variants(raw.get("variants"), source, space)
    baseline = _typed(raw, "baseline", str, source, None)
    if baseline is not None and baseline not in variants:
        raise StudyError(f"{where(source, 'baseline')}expected one of the variants ({', '.join(variants)}), got {baseline!r}")

    spec = StudySpec(
        name=name,
        source=source,
        description=_typed(raw, "description", str, source, ""),
        dataset=_typed(raw, "dataset", str, source, "cifar100"),
        metric=_choice(raw, "metric", METRICS, source, "test_acc"),
        mode=_choice(raw, "mode", ("max", "min"), source, "max"),
        num_samples=_positive_int(raw, "num_samples", source, 1),
        scheduler=parse_section(raw, "scheduler", SchedulerSpec, source),
        search=parse_section(raw, "search", SearchSpec, source),
        resources=parse_section(raw, "resources", ResourcesSpec, source),
        max_failures=_typed(raw, "max_failures", int, source, 2),
        keep_checkpoints=_positive_int(raw, "keep_checkpoints", source, 2),
        variants=variants,
        baseline=baseline or (next(iter(variants)) if variants else None),
        space=space,
        raw=raw,
    )
    check_spec(spec)
    return spec


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Fold CLI overrides into the raw file, so they are checked like the file's own values."""
    space = dict(raw.get("space") or {}) if isinstance(raw.get("space") or {}, dict) else raw.get("space")
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("name", "dataset", "num_samples", "max_failures"):
            raw[key] = value
        elif key in ("data_dir", "seed"):
            space[key] = value  # a fixed value replaces the file's grid, e.g. --seed 3
        elif key == "max_epochs":
            space["epochs"] = value
            if isinstance(raw.get("variants"), dict):  # one epoch count for every variant
                raw["variants"] = {
                    n: {k: v for k, v in o.items() if k != "epochs"} if isinstance(o, dict) else o
                    for n, o in raw["variants"].items()
                }
            sched = dict(raw.get("scheduler") or {})
            sched["max_t"] = value
            # Keep ASHA meaningful on short runs: a grace period of at most a third of the epochs.
            sched["grace_period"] = min(int(sched.get("grace_period", 1)), max(1, value // 3))
            raw["scheduler"] = sched
        elif key == "scheduler":
            raw["scheduler"] = {**(raw.get("scheduler") or {}), "type": value}
        elif key == "set":
            for item in value:
                field_name, sep, text = item.partition("=")
                if not sep or not field_name:
                    raise StudyError(f"--set: expected FIELD=VALUE (e.g. num_train=500), got {item!r}")
                try:
                    space[field_name.strip()] = yaml.safe_load(text)
                except yaml.YAMLError:
                    raise StudyError(f"--set {item}: the value is not valid YAML") from None
        elif key in ("cpus_per_trial", "gpus_per_trial"):
            res = dict(raw.get("resources") or {})
            res["cpu" if key == "cpus_per_trial" else "gpu"] = value
            raw["resources"] = res
        else:
            raise ValueError(f"unknown override {key}")
    if space:
        raw["space"] = space
    return raw


def parse_domain(key: str, value: Any, source: str) -> Any:
    """A fixed value, or a one-key mapping {grid|choice|uniform|loguniform|randint: [...]}. """
    label = f"space.{key}"
    if key not in TrialConfig.field_names():
        raise StudyError(f"{where(source, label)}unknown config field; known: {', '.join(TrialConfig.field_names())}")
    if not isinstance(value, dict):
        TrialConfig.from_dict({key: value}, source, "space")
        return value
    if len(value) != 1 or next(iter(value)) not in DOMAINS:
        raise StudyError(f"{where(source, label)}expected a value or one of {{{', '.join(DOMAINS)}: [...]}}, got {value!r}")
    kind, args = next(iter(value.items()))
    label = f"{label}.{kind}"
    if not isinstance(args, list) or not args:
        raise StudyError(f"{where(source, label)}expected a non-empty list, got {args!r}")
    if kind in ("grid", "choice"):
        for v in args:
            TrialConfig.from_dict({key: v}, source, label=label)
        return Domain(kind, tuple(args))
    if len(args) != 2:
        raise StudyError(f"{where(source, label)}expected [low, high], got {args!r}")
    low, high = args
    for v in args:
        TrialConfig.from_dict({key: v}, source, label=label)
        check_value(int if kind == "randint" else float, v, where(source, label))
    if not low < high:
        raise StudyError(f"{where(source, label)}expected low < high, got {args!r}")
    if kind == "loguniform" and low <= 0:
        raise StudyError(f"{where(source, label)}expected low > 0 for a log scale, got {low!r}")
    return Domain(kind, (low, high))


def parse_variants(raw: Any, source: str, space: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise StudyError(f"{where(source, 'variants')}expected a mapping of variant name -> config fields, got {raw!r}")
    variants = {}
    for name, overrides in raw.items():
        label = f"variants.{name}"
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


def parse_section(raw: Mapping[str, Any], key: str, cls: type, source: str) -> Any:
    section = raw.get(key)
    if section is None:
        return cls()
    if not isinstance(section, dict):
        raise StudyError(f"{where(source, key)}expected a mapping, got {section!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    values = {}
    for k, v in section.items():
        if k not in fields:
            raise StudyError(f"{where(source, f'{key}.{k}')}unknown key; expected one of: {', '.join(fields)}")
        hint = {"str": str, "int": int, "float": float, "int | None": int, "float | None": float}[hints[k]]
        values[k] = None if v is None and "None" in hints[k] else check_value(hint, v, where(source, f"{key}.{k}"))
    return cls(**values)


def _typed(raw: Mapping[str, Any], key: str, typ: type, source: str, default: Any) -> Any:
    value = raw.get(key, default)
    return value if value is None and default is None else check_value(typ, value, where(source, key))


def _positive_int(raw: Mapping[str, Any], key: str, source: str, default: int) -> int:
    value = _typed(raw, key, int, source, default)
    if value <= 0:
        raise StudyError(f"{where(source, key)}expected an integer > 0, got {value!r}")
    return value


def _choice(raw: Mapping[str, Any], key: str, options: tuple[str, ...], source: str, default: str) -> str:
    value = _typed(raw, key, str, source, default)
    if value not in options:
        raise StudyError(f"{where(source, key)}expected one of {', '.join(options)}, got {value!r}")
    return value


def check_spec(spec: StudySpec) -> None:
    """Checks that need the whole file: scheduler and search sanity, every grid combination."""
    src = spec.source
    s = spec.scheduler
    if s.type not in ("asha", "fifo"):
        raise StudyError(f"{where(src, 'scheduler.type')}expected asha or fifo, got {s.type!r}")
    if s.max_t is not None and s.max_t <= 0:
        raise StudyError(f"{where(src, 'scheduler.max_t')}expected an integer > 0, got {s.max_t!r}")
    if s.grace_period <= 0 or (s.max_t is not None and s.grace_period > s.max_t):
        raise StudyError(f"{where(src, 'scheduler.grace_period')}expected 1 <= grace_period <= max_t, got {s.grace_period!r}")
    if s.reduction_factor < 2:
        raise StudyError(f"{where(src, 'scheduler.reduction_factor')}is {s.reduction_factor}, but must be >= 2")
    if spec.search.type not in ("grid", "random", "optuna"):
        raise StudyError(f"{where(src, 'search.type')}expected grid, random or optuna, got {spec.search.type!r}")
    if spec.search.max_concurrent <= 0:
        raise StudyError(f"{where(src, 'search.max_concurrent')}expected an integer > 0, got {spec.search.max_concurrent}")
    if spec.search.type == "optuna":
        for key, v in spec.space.items():
            if isinstance(v, Domain) and v.kind == "grid":
                raise StudyError(f"{where(src, f'space.{key}.grid')}optuna samples its points; use choice instead of grid")
        if spec.variants:
            raise StudyError(f"{where(src, 'variants')}optuna cannot search named variants; use space fields")
    cpu, gpu = spec.resources.cpu, spec.resources.gpu
    if cpu is not None and cpu <= 0:
        raise StudyError(f"{where(src, 'resources.cpu')}expected a number > 0, got {cpu}")
    if gpu is not None and gpu < 0:
        raise StudyError(f"{where(src, 'resources.gpu')}expected a number >= 0, got {gpu}")
    if gpu is not None and gpu > 1 and gpu != int(gpu):
        raise StudyError(f"{where(src, 'resources.gpu')}fractions are for sharing one GPU; above 1 use a whole number, got {spec.resources.gpu}")
    if spec.max_failures < 0:
        raise StudyError(f"{where(src, 'max_failures')}expected an integer >= 0, got {spec.max_failures}")
    TrialConfig.from_dict({"dataset": spec.dataset}, src)
    spec.trial_configs()  # every combination builds a valid TrialConfig
