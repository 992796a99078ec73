"""Search-space YAML files: parse, check every key, and hold the result as one frozen `StudySpec`.

A file (with CLI overrides folded in) is read into a `StudySpec` before Ray starts. Every error
is a `StudyError` whose one line names the source (the file and key, or the CLI flag); see
docs/errors.md and docs/studies.md. Each key's type, default and bounds are stated
once, on the dataclasses below, and checked by `study.checks.parse_dataclass`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import yaml

from study.checks import check_field, check_value, in_range, one_of, option, parse_dataclass
from study.config import MAX_SEED, TrialConfig
from study.data import DATASETS
from study.data.split import val_count
from study.errors import StudyError, where
from study.models import model_fields
from study.yaml_input import parse_yaml, read_yaml

METRICS = ("val_acc", "val_loss", "test_acc", "test_loss", "train_acc", "train_loss")
DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,99}$")  # one path component, never "." or ".."
MAX_TRIALS = 100_000
# Values in one grid or choice list. Each is checked as a config value, and a grid's values are
# each a set of trials: a hand-written search lists tens.
MAX_VALUES = 10_000
# Grid points x variants: each is built and checked as a whole TrialConfig before Ray starts
# (and sized for `study validate`), so this bounds those checks to about a second.
MAX_CONFIGS = 10_000


def safe_name(value: Any) -> str | None:
    """Experiment and variant names become folder names: one safe path component."""
    if SAFE_NAME.match(value):
        return None
    return "a name of letters, digits and ._+- (at most 100, not starting with '.')"


def _count(low: int, high: int) -> Any:
    return in_range(low, high, what="an integer")


@dataclass(frozen=True)
class Domain:
    """One searched field: `kind` is one of DOMAINS; `values` the grid/choice list or [low, high]."""

    kind: str
    values: tuple[Any, ...]


def is_sampled(value: Any) -> bool:
    """A domain a search samples (choice, uniform, loguniform, randint), not a grid or a fixed value."""
    return isinstance(value, Domain) and value.kind != "grid"


@dataclass(frozen=True)
class SchedulerSpec:
    type: str = option("asha", one_of(("asha", "fifo")))
    max_t: int | None = option(None, _count(1, 10_000))  # epochs a trial may reach; None = largest `epochs`
    grace_period: int = option(1, _count(1, 10_000))  # epochs every trial runs before ASHA may stop it
    reduction_factor: float = option(2, in_range(2, 100))  # ASHA keeps the top 1/reduction_factor at each rung


@dataclass(frozen=True)
class SearchSpec:
    type: str = option("grid", one_of(("grid", "random", "optuna")))  # random: Tune's variant generator
    max_concurrent: int = option(4, _count(1, 10_000))  # optuna: trials suggested at once (ConcurrencyLimiter)
    seed: int | None = option(None, _count(0, MAX_SEED))  # random/optuna: sampler seed, for a reproducible search
    # optuna: TPE's first trials are sampled at random, to have something to model; None = Optuna's default
    n_startup_trials: int | None = option(None, _count(0, MAX_TRIALS))

    def startup_trials(self) -> int:
        """TPE's random start-up trials: the file's, else TPESampler's own default (read from Optuna)."""
        if self.n_startup_trials is not None:
            return self.n_startup_trials
        import inspect

        from optuna.samplers import TPESampler

        return int(inspect.signature(TPESampler).parameters["n_startup_trials"].default)


@dataclass(frozen=True)
class ResourcesSpec:
    cpu: float | None = option(None, in_range(0, 4096, low_open=True))  # CPU cores per trial; None = 1
    # GPUs per trial; fractions pack trials on one GPU. None = 1 if the cluster has GPUs, else 0.
    gpu: float | None = option(None, in_range(0, 1024))


def _internal(default: Any) -> Any:
    """A StudySpec field that is derived, never read from a file."""
    return dataclasses.field(default=default, metadata={"internal": True}, compare=False)


@dataclass(frozen=True)
class StudySpec:
    """One search-space file, checked. Top-level keys of the file are the fields without `internal`."""

    name: str = option("", safe_name)  # experiment name; "" = the file name
    description: str = option("")
    dataset: str = option("cifar100", one_of(DATASETS.names))
    metric: str = option("val_acc", one_of(METRICS))  # what every selection reads: ASHA, TPE, best trial, export
    mode: str = option("max", one_of(("max", "min")))
    num_samples: int = option(1, _count(1, MAX_TRIALS))  # repeats of the grid (samples for random/optuna)
    scheduler: SchedulerSpec = option(SchedulerSpec())
    search: SearchSpec = option(SearchSpec())
    resources: ResourcesSpec = option(ResourcesSpec())
    max_failures: int = option(2, _count(0, 100))  # retries of a crashed trial, from its last checkpoint
    keep_checkpoints: int = option(2, _count(1, 1000))  # newest checkpoints kept per trial
    tensorboard: bool = option(False)  # also write TensorBoard event files (tensorboardX imports torch in the driver)
    variants: Mapping[str, Mapping[str, Any]] = option(MappingProxyType({}))  # name -> config fields
    baseline: str | None = option(None)  # the variant ablation effects are measured against
    space: Mapping[str, Any] = option(MappingProxyType({}))  # field -> fixed value | Domain
    source: str = _internal("")  # the YAML file it came from, for messages
    text: str = _internal("")  # the checked file with overrides, as YAML (saved as study.yaml)

    # --- derived views

    def fixed(self) -> dict[str, Any]:
        return {k: v for k, v in self.space.items() if not isinstance(v, Domain)}

    def max_epochs(self) -> int:
        """The most epochs any trial can run: ASHA's max_t."""
        if self.scheduler.max_t is not None:
            return self.scheduler.max_t
        return max(epoch_values(self))

    def stop_epochs(self) -> tuple[int, ...]:
        """The epochs at which the scheduler may stop a trial: ASHA's rungs, grace_period x
        reduction_factor^k, as many as Ray's ASHA makes for max_t (its formula); none for FIFO.
        A trial checkpoints them, since each may be its last (see `checkpoint_due`)."""
        if self.scheduler.type != "asha":
            return ()
        import numpy as np  # Ray's own arithmetic, so that the rungs are Ray's to the last epoch

        max_t = self.max_epochs()
        grace, rf = min(self.scheduler.grace_period, max_t), self.scheduler.reduction_factor
        rungs = int(np.log(max_t / grace) / np.log(rf) + 1)
        return tuple(sorted(grace * rf**k for k in range(rungs)))

    def sampled(self) -> list[str]:
        """The fields a search samples (choice, uniform, loguniform, randint): not grids, not fixed."""
        return [k for k, v in self.space.items() if is_sampled(v)]

    def wants_cuda(self) -> bool:
        """Whether some trial asks for device cuda (which needs a GPU in each trial)."""
        return any(c.device == "cuda" for c in self.trial_configs())

    def repeats_note(self) -> str | None:
        """What num_samples > 1 means when nothing is sampled: the same trials again, seed and all."""
        if self.num_samples < 2 or self.sampled():
            return None
        return (
            f"note: nothing in the space is sampled, so num_samples {self.num_samples} trains each configuration "
            f"{self.num_samples} times with the same seed; the tables count those repeats once "
            "(for more seeds, list them: seed: {grid: [...]})"
        )

    def selection(self) -> dict[str, Any]:
        """What every selection reads: the metric, and the validation split(s) the trials hold out."""
        configs = self.trial_configs()
        return {
            "metric": self.metric,
            "mode": self.mode,
            "dataset": self.dataset,
            "val_size": sorted({c.val_size for c in configs}),
            "split_seed": sorted({c.split_seed for c in configs}),
        }

    def selection_note(self) -> str:
        """One line: what ASHA, the search, the best trial and export select on."""
        chosen = self.selection()
        sizes = ", ".join(f"{v:.0%}" if 0 < v < 1 else f"{v:g} images" for v in chosen["val_size"])
        if chosen["val_size"] == [0]:
            split = "no validation split (val_size 0: every train image trains)"
        else:
            seeds = ", ".join(map(str, chosen["split_seed"]))
            split = f"validation split: {sizes} of the train split held out (split_seed {seeds})"
        on_test = "; selected on test: the tables mark those numbers" if self.metric.startswith("test_") else ""
        return f"selection: {self.metric} ({self.mode}); {split}{on_test}"

    def startup_note(self) -> str | None:
        """How many of an optuna search's trials TPE samples at random; a warning when that is all of them."""
        if self.search.type != "optuna":
            return None
        startup, trials = self.search.startup_trials(), self.num_samples
        if startup == 0:
            return "note: no random start-up trials (search.n_startup_trials 0): TPE chooses every trial"
        if trials <= startup:
            return (
                f"warning: {trials} trial{'s' * (trials != 1)}, and TPE's first {startup} are random start-up "
                "trials: this search is a random search; raise num_samples or lower search.n_startup_trials"
            )
        return (
            f"note: TPE samples the first {startup} of the {trials} trials at random (search.n_startup_trials), "
            f"and models the rest on the trials finished before them"
        )

    def num_trials(self) -> int:
        """Trials Tune will create: grid points x variants x num_samples (optuna: num_samples)."""
        grid = 1
        for v in self.space.values():
            if isinstance(v, Domain) and v.kind == "grid":
                grid *= len(v.values)
        return grid * max(1, len(self.variants)) * self.num_samples

    def trial_configs(self, bound: str = "low") -> list[TrialConfig]:
        """Every grid point x variant, with sampled domains at their low (or high) bound, for checks."""
        grids = {k: v.values for k, v in self.space.items() if isinstance(v, Domain) and v.kind == "grid"}
        sampled = {k: self.space[k] for k in self.sampled()}
        configs = []
        for combo in itertools.product(*grids.values()):
            for overrides in self.variants.values() or [{}]:
                raw = {**self.fixed(), **dict(zip(grids, combo, strict=True)), **overrides, "dataset": self.dataset}
                raw.update({k: at_bound(d, bound) for k, d in sampled.items()})
                configs.append(TrialConfig.from_dict(raw, self.source, "space"))
        return configs


def at_bound(domain: Domain, bound: str) -> Any:
    """A sampled domain's lowest value, or its highest (randint's high is exclusive)."""
    values = domain.values
    if bound == "low":
        return values[0]
    if domain.kind == "randint":
        return values[1] - 1
    if domain.kind == "choice" and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return max(values)
    return values[-1]


def epoch_values(spec: StudySpec) -> list[int]:
    raw = spec.space.get("epochs", TrialConfig.epochs)
    values = list(raw.values) if isinstance(raw, Domain) else [raw]
    return values + [v["epochs"] for v in spec.variants.values() if "epochs" in v]


# --- parsing -----------------------------------------------------------------------------


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


# --- CLI overrides -------------------------------------------------------------------------

# Flag -> (the dataclass and field that check its value). The flags' own names appear in errors.
FLAG_FIELDS: dict[str, tuple[type, str]] = {
    "dataset": (StudySpec, "dataset"),
    "metric": (StudySpec, "metric"),
    "num_samples": (StudySpec, "num_samples"),
    "max_failures": (StudySpec, "max_failures"),
    "tensorboard": (StudySpec, "tensorboard"),
    "scheduler": (SchedulerSpec, "type"),
    "cpus_per_trial": (ResourcesSpec, "cpu"),
    "gpus_per_trial": (ResourcesSpec, "gpu"),
    "data_dir": (TrialConfig, "data_dir"),
    "seed": (TrialConfig, "seed"),
    "max_epochs": (TrialConfig, "epochs"),
}
FLAG_SETS_FIELD = {"data_dir": "data_dir", "seed": "seed", "max_epochs": "epochs", "dataset": "dataset"}


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Check each CLI value against its field, naming the flag; parse --set FIELD=VALUE items."""
    checked: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "set":
            checked["set"] = parse_set_items(value)
            continue
        cls, field_name = FLAG_FIELDS[key]
        checked[key] = check_field(cls, field_name, value, f"{flag(key)}: ")
    for field_name, (item, _) in checked.get("set", {}).items():
        for key, target in FLAG_SETS_FIELD.items():
            if target == field_name and key in checked:
                raise StudyError(f"--set {item}: conflicts with {flag(key)} {checked[key]}; give one of them")
    return checked


def parse_set_items(items: list[str]) -> dict[str, tuple[str, Any]]:
    """--set FIELD=VALUE (repeatable) -> {field: (item, checked value)}."""
    parsed: dict[str, tuple[str, Any]] = {}
    for item in items:
        field_name, sep, text = item.partition("=")
        field_name = field_name.strip()
        if not sep or not field_name:
            raise StudyError(f"--set: expected FIELD=VALUE (e.g. num_train=500), got {item!r}")
        if field_name in parsed:
            raise StudyError(f"--set {item}: {field_name} is set twice")
        if field_name == "dataset":
            raise StudyError(f"--set {item}: use --dataset for the dataset")
        value = parse_yaml(text, f"--set {item}")
        TrialConfig.from_dict({field_name: value}, f"--set {item}", label=field_name)
        parsed[field_name] = (item, value)
    return parsed


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Fold checked CLI overrides into the raw file, replacing the file's values."""
    space_raw = raw.get("space") or {}
    space = dict(space_raw) if isinstance(space_raw, dict) else space_raw
    for key, value in overrides.items():
        if key in ("name", "dataset", "metric", "num_samples", "max_failures", "tensorboard"):
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
            grace = sched.get("grace_period", 1)
            sched["grace_period"] = min(grace if isinstance(grace, int) else 1, max(1, value // 3))
            raw["scheduler"] = sched
        elif key == "scheduler":
            raw["scheduler"] = {**(raw.get("scheduler") or {}), "type": value}
        elif key == "set":
            for field_name, (_, value_) in value.items():
                space[field_name] = value_
                if isinstance(raw.get("variants"), dict):  # --set wins over every variant's value
                    raw["variants"] = {
                        n: {k: v for k, v in o.items() if k != field_name} if isinstance(o, dict) else o
                        for n, o in raw["variants"].items()
                    }
        elif key in ("cpus_per_trial", "gpus_per_trial"):
            res = dict(raw.get("resources") or {})
            res["cpu" if key == "cpus_per_trial" else "gpu"] = value
            raw["resources"] = res
        else:
            raise ValueError(f"unknown override {key}")
    if space:
        raw["space"] = space
    return raw


# --- the space and variants ----------------------------------------------------------------


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


def check_spec(spec: StudySpec) -> None:
    """Checks that need the whole file: scheduler against search, search against space, every grid point."""
    src = spec.source
    s = spec.scheduler
    if s.max_t is not None and s.grace_period > s.max_t:
        raise StudyError(
            f"{where(src, 'scheduler.grace_period')}expected 1 <= grace_period <= max_t ({s.max_t}), got {s.grace_period!r}"
        )
    if spec.search.type != "optuna" and spec.search.n_startup_trials is not None:
        raise StudyError(
            f"{where(src, 'search.n_startup_trials')}only an optuna search has start-up trials, "
            f"but search.type is {spec.search.type}; remove the key"
        )
    if spec.search.type == "optuna":
        for key, v in spec.space.items():
            if isinstance(v, Domain) and v.kind == "grid":
                raise StudyError(
                    f"{where(src, f'space.{key}.grid')}optuna samples its points; use choice instead of grid"
                )
        if spec.variants:
            raise StudyError(f"{where(src, 'variants')}optuna cannot search named variants; use space fields")
        if not spec.sampled():
            raise StudyError(
                f"{where(src, 'search.type')}optuna has nothing to search: no field in space is sampled "
                f"({', '.join(d for d in DOMAINS if d != 'grid')})"
            )
    gpu = spec.resources.gpu
    if gpu is not None and gpu > 1 and gpu != int(gpu):
        raise StudyError(
            f"{where(src, 'resources.gpu')}fractions are for sharing one GPU; above 1 use a whole number, got {gpu}"
        )
    # The sizes first: every check below builds each grid point.
    if spec.num_trials() > MAX_TRIALS:
        raise StudyError(f"{where(src, 'space')}{spec.num_trials()} trials; at most {MAX_TRIALS} in one study")
    configs = spec.num_trials() // spec.num_samples
    if configs > MAX_CONFIGS:
        raise StudyError(
            f"{where(src, 'space')}{configs} grid points x variants; at most {MAX_CONFIGS} in one study "
            "(num_samples repeats them)"
        )
    if spec.resources.gpu == 0 and spec.wants_cuda():
        raise StudyError(
            f"{where(src, 'space.device')}'cuda' needs a GPU in each trial, but resources.gpu is 0; "
            "use device auto or cpu, or give trials a GPU"
        )
    better = "min" if spec.metric.endswith("_loss") else "max"
    if spec.mode != better:
        raise StudyError(
            f"{where(src, 'mode')}{spec.metric} is better when {'lower' if better == 'min' else 'higher'}, "
            f"so mode must be {better}, got {spec.mode!r}"
        )
    configs = spec.trial_configs()  # every combination builds a valid TrialConfig
    check_model_fields(spec)
    if spec.metric.startswith("val_") and any(c.val_size == 0 for c in configs):
        raise StudyError(
            f"{where(src, 'metric')}{spec.metric} needs a validation split, but val_size is 0 (the report's "
            "protocol: all train images train); select on the test set by saying so, metric: test_acc (the "
            "tables then mark those numbers 'selected on test'), or hold out a split (space.val_size: 0.1)"
        )
    check_split_sizes(spec)


def check_split_sizes(spec: StudySpec) -> None:
    """num_train, num_test and the validation split fit a fixed-size dataset's splits."""
    sizes = getattr(DATASETS.get(spec.dataset), "split_sizes", None)
    if not sizes:
        return
    src, (train, test) = spec.source, sizes
    for config in spec.trial_configs("high"):
        held = val_count(config.val_size, train)
        if held >= train:
            raise StudyError(
                f"{where(src, 'space.val_size')}{config.val_size:g} holds out {held} of the {train} images of "
                f"the {spec.dataset} train split; leave some to train on (a fraction below 1, or a smaller count)"
            )
        for key, asked, size in (("num_train", config.num_train, train - held), ("num_test", config.num_test, test)):
            if asked > size:
                rest = f" left after the validation split ({held} held out)" if key == "num_train" and held else ""
                raise StudyError(
                    f"{where(src, f'space.{key}')}{asked} is more than the {size} images of the {spec.dataset} "
                    f"{key[4:]} split{rest}; use at most {size} (0 = all)"
                )


def check_model_fields(spec: StudySpec) -> None:
    """A field that only some models read is set only where the trial's model reads it.

    Otherwise it would be recorded, and shown in the tables, as if it had mattered.
    """
    owners = model_fields()
    fixed = spec.space.get("model", TrialConfig.model)
    space_models = list(fixed.values) if isinstance(fixed, Domain) else [fixed]
    for variant, overrides in (spec.variants or {None: {}}).items():
        models = [overrides["model"]] if "model" in overrides else space_models
        for key in [*spec.space, *overrides]:
            for model in models if key in owners else ():
                if model not in owners[key]:
                    label = f"variants.{variant}.{key}" if key in overrides else f"space.{key}"
                    trial = f" (variant {variant})" if variant is not None else ""
                    raise StudyError(
                        f"{where(spec.source, label)}model {model}{trial} does not read {key}, a field of "
                        f"{', '.join(owners[key])}; set it only for the trials of {' or '.join(owners[key])} "
                        "(in their variants)"
                    )
