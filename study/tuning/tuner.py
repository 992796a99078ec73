"""The Tuner of a study: new from a spec, or restored from its folder, with the trainable told its folder."""

from __future__ import annotations

import os
from typing import Any

from ray import tune

from study.errors import StudyError, reason
from study.names import VARIANT_KEY
from study.space import StudySpec
from study.storage import basename, is_uri, parent
from study.trust.state_backup import StateBackup
from study.tuning.entry import train_trial
from study.tuning.output import make_quiet, progress, progress_reporter, quiet_tune_noise, result_loggers, saved_loggers
from study.tuning.params import param_space
from study.tuning.search import grow_search, make_scheduler, make_search
from study.tuning.settings import auto_loggers

# Tune forces a save of its whole experiment state whenever a trial has written num_to_keep
# checkpoints since the last save (so that its state never names a checkpoint it deleted): with a
# small num_to_keep, a save per trial, each the size of all trials. On local storage Tune keeps
# this many, and the trials themselves empty all but the file's `keep_checkpoints` newest
# (`study.checkpoints.files.prune`), so the disk holds what the file says.
TUNE_KEEP = 20


def make_trainable(
    resources: dict[str, float], experiment_path: str, keep: int, stop_epochs: tuple[int, ...], trust: bool = False
) -> Any:
    """The trainable, told its experiment folder (where a resumed trial finds its checkpoints),
    how many checkpoints keep their files (on local storage; on a URI Tune's num_to_keep), the
    epochs at which the scheduler may stop a trial (which it then checkpoints), and whether it
    may load checkpoints not signed for it (`trust`, from `study resume --trust`)."""
    local = not is_uri(experiment_path)
    trainable = tune.with_parameters(
        train_trial,
        experiment_path=experiment_path,
        keep=keep if local else None,
        stop_epochs=stop_epochs,
        trust=trust,
    )
    return tune.with_resources(trainable, resources)


def tune_keep(experiment_path: str, keep: int) -> int:
    return keep if is_uri(experiment_path) else max(keep, TUNE_KEEP)


def trial_name(trial: Any) -> str:
    """Short, readable trial names: "cnn64-s1-00004" (variant, seed, trial number)."""
    variant = trial.config.get(VARIANT_KEY) or "trial"
    return f"{variant}-s{trial.config.get('seed', 0)}-{trial.trial_id.split('_')[-1]}"


def never_unpickle_errors() -> None:
    """Keep Ray from unpickling a failed trial's error.pkl (code, in an unsigned trial folder).

    Tune's ResultGrid, built at the end of `Tuner.fit`, loads each failed trial's error.pkl
    through `Trial.get_pickled_error`, and falls back to the text of error.txt when that gives
    None: the error then stays a message, never an object made by whoever wrote the file.
    """
    from ray.tune.experiment.trial import Trial

    Trial.get_pickled_error = no_pickled_error


def no_pickled_error(trial: Any) -> None:
    return None


def make_tuner(spec: StudySpec, experiment_path: str, resources: dict[str, float], quiet: bool = False) -> tune.Tuner:
    """A new Tuner writing into `experiment_path` (storage folder / run name); `quiet`: see `progress`."""
    quiet_tune_noise()
    return tune.Tuner(
        make_trainable(resources, experiment_path, spec.keep_checkpoints, spec.stop_epochs()),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            scheduler=make_scheduler(spec),
            search_alg=make_search(spec),
            num_samples=spec.num_samples,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
            # A finished trial's worker process runs the next trial: no new process, no second
            # `import torch`, and the dataset stays cached in it (load_dataset's cache). The
            # trainable builds model, optimiser and generators from the config every time.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=basename(experiment_path),
            storage_path=parent(experiment_path),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=tune_keep(experiment_path, spec.keep_checkpoints)),
            verbose=0 if quiet else 1,  # the status table only (see progress_reporter)
            progress_reporter=None if quiet else progress_reporter(spec),
            callbacks=[
                StateBackup(experiment_path),
                *progress(spec, quiet),
                *result_loggers(spec, experiment_path),
            ],
        ),
    )


def restore_tuner(
    experiment_path: str, resources: dict[str, float], spec: StudySpec, trust: bool = False, quiet: bool = False
) -> tune.Tuner:
    """Ray's own restore: finished trials stay finished, the rest continue from their checkpoints."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the saved CLIReporter, not a config box per trial
    # A run saved with its loggers keeps them; an older one gets Tune's defaults, as it had then.
    auto_loggers(not saved_loggers(experiment_path))
    quiet_tune_noise()
    trainable = make_trainable(resources, experiment_path, spec.keep_checkpoints, spec.stop_epochs(), trust)
    try:
        tuner = tune.Tuner.restore(experiment_path, trainable, resume_unfinished=True, resume_errored=True)
    except (ModuleNotFoundError, AttributeError) as exc:  # tuner.pkl names code this version lacks
        if isinstance(exc, AttributeError) and "Can't get attribute" not in str(exc):
            raise  # not unpickling's missing name: a bug, shown as one
        raise StudyError(
            f"{experiment_path}: Tune's saved state (tuner.pkl) names code that this version of study does not "
            f"have ({reason(exc)}); resume it with the version that made it (environment.json names it)"
        ) from None
    if spec.search.type == "optuna":
        grow_search(tuner, spec.num_samples)
    if quiet:
        make_quiet(tuner, spec)
    return tuner
