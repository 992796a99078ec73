"""The flags that replace a file's values: one table builds their arguments, checks and folds them.

`study run` and `study validate` take the same flags. Each row names the field that checks its
value (the flag's own name appears in errors) and how the value goes into the raw file before
the file is parsed, so a flag is checked exactly as the file's key would be.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from study.checks import check_field
from study.config import TrialConfig
from study.errors import StudyError
from study.space.spec import ResourcesSpec, SchedulerSpec, StudySpec
from study.yaml_input import parse_yaml

Fold = Callable[[dict[str, Any], Any], None]  # (raw file, checked value): put the value into the file


def _mapping(raw: dict[str, Any], key: str) -> dict[str, Any] | None:
    """A copy of the file's section `key` (put back into `raw`); None when it is not a mapping."""
    section = raw.get(key)
    if section is None:
        section = {}
    if not isinstance(section, dict):
        return None  # left as it is, for the parser to refuse with the file's key
    raw[key] = dict(section)
    return raw[key]


def _without_in_variants(raw: dict[str, Any], field_name: str) -> None:
    """Drop `field_name` from every variant: the flag's one value wins over theirs."""
    if isinstance(raw.get("variants"), dict):
        raw["variants"] = {
            n: {k: v for k, v in o.items() if k != field_name} if isinstance(o, dict) else o
            for n, o in raw["variants"].items()
        }


def top(key: str) -> Fold:
    def fold(raw: dict[str, Any], value: Any) -> None:
        raw[key] = value

    return fold


def fixed_in_space(field_name: str) -> Fold:
    """A fixed value replaces the file's value or grid, e.g. --seed 3."""

    def fold(raw: dict[str, Any], value: Any) -> None:
        if (space := _mapping(raw, "space")) is not None:
            space[field_name] = value

    return fold


def in_section(section: str, key: str) -> Fold:
    def fold(raw: dict[str, Any], value: Any) -> None:
        if (mapping := _mapping(raw, section)) is not None:
            mapping[key] = value

    return fold


def add_loggers(raw: dict[str, Any], value: Any) -> None:
    """Adds to the file's loggers (a file's value that is not a list stays, to be refused)."""
    listed = raw.get("loggers") or []
    if isinstance(listed, list):
        raw["loggers"] = [*listed, *(name for name in value if name not in listed)]


def max_epochs(raw: dict[str, Any], value: Any) -> None:
    """One epoch count for every trial and variant, and ASHA's max_t; grace at most a third."""
    fixed_in_space("epochs")(raw, value)
    _without_in_variants(raw, "epochs")
    if (scheduler := _mapping(raw, "scheduler")) is not None:
        scheduler["max_t"] = value
        grace = scheduler.get("grace_period", 1)  # keeps ASHA meaningful on short runs
        scheduler["grace_period"] = min(grace if isinstance(grace, int) else 1, max(1, value // 3))


def set_fields(raw: dict[str, Any], value: dict[str, tuple[str, Any]]) -> None:
    """--set FIELD=VALUE fixes the field in the space and wins over every variant's value."""
    for field_name, (_, field_value) in value.items():
        fixed_in_space(field_name)(raw, field_value)
        _without_in_variants(raw, field_name)


@dataclass(frozen=True)
class Override:
    """One flag: the field that checks its value, how it folds into the file, and its argparse."""

    checked_by: tuple[type, str] | None  # (dataclass, field); None: --set, checked per item
    fold: Fold
    help: str
    argparse: Mapping[str, Any] = field(default_factory=dict)
    fixes: str | None = None  # the config field it fixes: --set of that field conflicts with it


OVERRIDES: dict[str, Override] = {
    "dataset": Override(
        (StudySpec, "dataset"),
        top("dataset"),
        "dataset registry name, e.g. digits, synthetic, cifar100",
        fixes="dataset",
    ),
    "data_dir": Override(
        (TrialConfig, "data_dir"),
        fixed_in_space("data_dir"),
        "where datasets are downloaded to or read from (CIFAR's archive; imagefolder's train/ and test/); "
        "default ~/.cache/cifar-study",
        fixes="data_dir",
    ),
    "metric": Override(
        (StudySpec, "metric"),
        top("metric"),
        "what every selection reads (ASHA, search, best trial, export): val_acc (default), val_loss, "
        "test_acc or test_loss (marked 'selected on test' in the tables; with --set val_size=0: the report's "
        "protocol), train_acc or train_loss",
    ),
    "num_samples": Override(
        (StudySpec, "num_samples"),
        top("num_samples"),
        "repeats of the grid, or samples for random/optuna",
        {"type": int},
    ),
    "max_epochs": Override(
        (TrialConfig, "epochs"),
        max_epochs,
        "epochs for every trial, and ASHA's max_t; ASHA's grace_period becomes at most N/3 (at least 1)",
        {"type": int},
        fixes="epochs",
    ),
    "cpus_per_trial": Override(
        (ResourcesSpec, "cpu"), in_section("resources", "cpu"), "CPU cores per trial", {"type": float}
    ),
    "gpus_per_trial": Override(
        (ResourcesSpec, "gpu"),
        in_section("resources", "gpu"),
        "GPUs per trial; 0.25 packs 4 trials on a GPU",
        {"type": float},
    ),
    "seed": Override(
        (TrialConfig, "seed"),
        fixed_in_space("seed"),
        "one fixed trial seed, replacing the file's seed grid",
        {"type": int},
        fixes="seed",
    ),
    "max_failures": Override(
        (StudySpec, "max_failures"), top("max_failures"), "retries of a crashed trial (default 2)", {"type": int}
    ),
    "tensorboard": Override(
        (StudySpec, "tensorboard"),
        top("tensorboard"),
        "also write TensorBoard event files into every trial folder (the same as --logger tensorboard)",
        {"action": "store_true", "default": None},
    ),
    "logger": Override(
        (StudySpec, "loggers"),
        add_loggers,
        "also log every trial to an experiment tracker: mlflow, wandb or tensorboard (repeatable; "
        "adds to the file's `loggers`; docs/analysis.md)",
        {"action": "append", "metavar": "NAME"},
    ),
    "scheduler": Override(
        (SchedulerSpec, "type"),
        in_section("scheduler", "type"),
        "fifo runs every trial to max_t (clean ablations); asha stops the weak early",
        {"choices": ("asha", "fifo")},
    ),
    "set": Override(
        None,
        set_fields,
        "fix any config field, e.g. --set num_train=500 --set batch_size=64 (repeatable)",
        {"action": "append", "metavar": "FIELD=VALUE"},
    ),
}


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The override flags, as one argument group of `parser`."""
    group = parser.add_argument_group("overrides (replace the file's values, checked the same way)")
    for key, override in OVERRIDES.items():
        group.add_argument(flag(key), help=override.help, **override.argparse)


def from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The override flags' values as parsed (None: not given)."""
    return {key: getattr(args, key) for key in OVERRIDES}


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Check each value against its field, naming the flag; parse --set FIELD=VALUE items."""
    checked: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "set":
            checked["set"] = parse_set_items(value)
            continue
        cls, field_name = OVERRIDES[key].checked_by
        checked[key] = check_field(cls, field_name, value, f"{flag(key)}: ")
    for field_name, (item, _) in checked.get("set", {}).items():
        for key in checked:
            if OVERRIDES[key].fixes == field_name:
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
    """Fold checked overrides into the raw file, replacing the file's values."""
    for key, value in overrides.items():
        OVERRIDES[key].fold(raw, value)
    return raw
