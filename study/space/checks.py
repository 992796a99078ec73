"""Checks that need the whole file: scheduler against search, sizes, the metric, every grid point."""

from __future__ import annotations

from study.config import TrialConfig
from study.data import DATASETS
from study.data.split import val_count
from study.errors import StudyError, where
from study.models import model_fields
from study.space.spec import DOMAINS, MAX_TRIALS, Domain, StudySpec

# Grid points x variants: each is built and checked as a whole TrialConfig before Ray starts
# (and sized for `study validate`), so this bounds those checks to about a second.
MAX_CONFIGS = 10_000


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
        for key in spec.grids():
            raise StudyError(f"{where(src, f'space.{key}.grid')}optuna samples its points; use choice instead of grid")
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
