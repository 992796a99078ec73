"""The search-space model: `StudySpec`, its sections and domains, and the views derived from them.

Each key's type, default and bounds are stated once, on the dataclasses below, and checked by
`study.checks.parse_dataclass` when a file is parsed (`study.space.parse`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from study.checks import count, each_of, in_range, one_of, option
from study.config import MAX_SEED, TrialConfig
from study.data import DATASETS
from study.errors import plural

METRICS = ("val_acc", "val_loss", "test_acc", "test_loss", "train_acc", "train_loss")
LOGGERS = ("mlflow", "wandb", "tensorboard")  # experiment trackers, through Ray's logger callbacks (study.trackers)
DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,99}$")  # one path component, never "." or ".."
MAX_TRIALS = 100_000


def safe_name(value: Any) -> str | None:
    """Experiment and variant names become folder names: one safe path component."""
    if SAFE_NAME.match(value):
        return None
    return "a name of letters, digits and ._+- (at most 100, not starting with '.')"


@dataclass(frozen=True)
class Domain:
    """One searched field: `kind` is one of DOMAINS; `values` the grid/choice list or [low, high]."""

    kind: str
    values: tuple[Any, ...]


def is_grid(value: Any) -> bool:
    """A grid: every value is a set of trials."""
    return isinstance(value, Domain) and value.kind == "grid"


def is_sampled(value: Any) -> bool:
    """A domain a search samples (choice, uniform, loguniform, randint), not a grid or a fixed value."""
    return isinstance(value, Domain) and value.kind != "grid"


@dataclass(frozen=True)
class SchedulerSpec:
    type: str = option("asha", one_of(("asha", "fifo")))
    max_t: int | None = option(None, count(1, 10_000))  # epochs a trial may reach; None = largest `epochs`
    grace_period: int = option(1, count(1, 10_000))  # epochs every trial runs before ASHA may stop it
    reduction_factor: float = option(2, in_range(2, 100))  # ASHA keeps the top 1/reduction_factor at each rung


@dataclass(frozen=True)
class SearchSpec:
    type: str = option("grid", one_of(("grid", "random", "optuna")))  # random: Tune's variant generator
    max_concurrent: int = option(4, count(1, 10_000))  # optuna: trials suggested at once (ConcurrencyLimiter)
    seed: int | None = option(None, count(0, MAX_SEED))  # random/optuna: sampler seed, for a reproducible search
    # optuna: TPE's first trials are sampled at random, to have something to model; None = Optuna's default
    n_startup_trials: int | None = option(None, count(0, MAX_TRIALS))

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
    num_samples: int = option(1, count(1, MAX_TRIALS))  # repeats of the grid (samples for random/optuna)
    scheduler: SchedulerSpec = option(SchedulerSpec())
    search: SearchSpec = option(SearchSpec())
    resources: ResourcesSpec = option(ResourcesSpec())
    max_failures: int = option(2, count(0, 100))  # retries of a crashed trial, from its last checkpoint
    keep_checkpoints: int = option(2, count(1, 1000))  # newest checkpoints kept per trial
    tensorboard: bool = option(False)  # the same as listing tensorboard in `loggers`
    loggers: tuple[str, ...] = option((), each_of(LOGGERS))  # experiment trackers each trial logs to
    variants: Mapping[str, Mapping[str, Any]] = option(MappingProxyType({}))  # name -> config fields
    baseline: str | None = option(None)  # the variant ablation effects are measured against
    space: Mapping[str, Any] = option(MappingProxyType({}))  # field -> fixed value | Domain
    source: str = _internal("")  # the YAML file it came from, for messages
    text: str = _internal("")  # the checked file with overrides, as YAML (saved as study.yaml)

    # --- derived views

    def trackers(self) -> tuple[str, ...]:
        """The loggers the study logs to, `tensorboard: true` included."""
        return self.loggers + (("tensorboard",) if self.tensorboard and "tensorboard" not in self.loggers else ())

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
                f"warning: {plural(trials, 'trial')}, and TPE's first {startup} are random start-up "
                "trials: this search is a random search; raise num_samples or lower search.n_startup_trials"
            )
        return (
            f"note: TPE samples the first {startup} of the {trials} trials at random (search.n_startup_trials), "
            f"and models the rest on the trials finished before them"
        )

    def size(self) -> str:
        """'N trials x up to M epochs', for the run's banner and validate."""
        return f"{plural(self.num_trials(), 'trial')} x up to {plural(self.max_epochs(), 'epoch')}"

    def num_trials(self) -> int:
        """Trials Tune will create: grid points x variants x num_samples (optuna: num_samples)."""
        grid = 1
        for values in self.grids().values():
            grid *= len(values)
        return grid * max(1, len(self.variants)) * self.num_samples

    def grids(self) -> dict[str, tuple[Any, ...]]:
        """The grid fields and their values."""
        return {k: v.values for k, v in self.space.items() if is_grid(v)}

    def trial_configs(self, bound: str = "low") -> list[TrialConfig]:
        """Every grid point x variant, with sampled domains at their low (or high) bound, for checks."""
        return list(self._configs_low if bound == "low" else self._configs_high)

    @functools.cached_property
    def _configs_low(self) -> tuple[TrialConfig, ...]:
        return self._configs("low")

    @functools.cached_property
    def _configs_high(self) -> tuple[TrialConfig, ...]:
        return self._configs("high")

    def _configs(self, bound: str) -> tuple[TrialConfig, ...]:
        grids = self.grids()
        sampled = {k: self.space[k] for k in self.sampled()}
        configs = []
        for combo in itertools.product(*grids.values()):
            for overrides in self.variants.values() or [{}]:
                raw = {**self.fixed(), **dict(zip(grids, combo, strict=True)), **overrides, "dataset": self.dataset}
                raw.update({k: at_bound(d, bound) for k, d in sampled.items()})
                configs.append(TrialConfig.from_dict(raw, self.source, "space"))
        return tuple(configs)


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
