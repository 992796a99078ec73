"""Ray Tune objects from a checked `StudySpec`: param space, scheduler, search, Tuner."""

from __future__ import annotations

import logging
import os
from typing import Any

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from study.config import TrialConfig
from study.entry import train_trial
from study.errors import StudyError, reason
from study.names import META_KEY, VARIANT_KEY
from study.progress import EtaCallback, TrialEndLines
from study.space import Domain, StudySpec, is_sampled
from study.storage import basename, is_uri, join, parent, read_bytes
from study.trust.asha import ResumableASHA
from study.trust.state_backup import StateBackup
from study.tuning.settings import auto_loggers


def to_tune_domain(domain: Domain) -> Any:
    kind, values = domain.kind, list(domain.values)
    if kind == "grid":
        return tune.grid_search(values)
    if kind == "choice":
        return tune.choice(values)
    if kind == "uniform":
        return tune.uniform(*values)
    if kind == "loguniform":
        return tune.loguniform(*values)
    return tune.randint(*values)  # [low, high): high is exclusive, as in Tune


class VariantValue:
    """A field that named variants set: the value of the trial's variant, else the file's (None:
    the default). Tune resolves it after the variant's grid value, so every field a trial runs
    with sits at the top level of its config (`result.config["augment"]`)."""

    def __init__(self, values: dict[str, Any], otherwise: Any) -> None:
        self.values, self.otherwise = values, otherwise

    def __call__(self, given: Any) -> Any:
        # Tune's variant generator passes the spec ({"config": ...}); its placeholder resolver the config.
        config = given["config"] if "config" in given else given
        return self.values.get(config[VARIANT_KEY], self.otherwise)


def param_space(spec: StudySpec) -> dict[str, Any]:
    """Tune's param_space: every field the file sets (a variant's at the top level, by its name
    in VARIANT_KEY), the validation split always, and the study's metadata."""
    space: dict[str, Any] = {k: to_tune_domain(v) if isinstance(v, Domain) else v for k, v in spec.space.items()}
    space["dataset"] = spec.dataset
    for key in ("val_size", "split_seed"):  # in every params.json, defaults or not: what selection read
        space.setdefault(key, getattr(TrialConfig, key))
    if spec.variants:
        space[VARIANT_KEY] = tune.grid_search(list(spec.variants))
        for key in sorted({k for overrides in spec.variants.values() for k in overrides}):
            values = {name: o[key] for name, o in spec.variants.items() if key in o}
            space[key] = tune.sample_from(VariantValue(values, spec.space.get(key)))
    # Constant across trials; lands in every trial's params.json so the analysis needs no side file.
    space[META_KEY] = {
        "experiment": spec.name,
        "baseline": spec.baseline,
        "max_t": spec.max_epochs(),
        "variants": list(spec.variants),  # the file's order, for the tables
        "metric": spec.metric,
        "mode": spec.mode,
        # Sampled fields and their domains, for the search tables and the Optuna study file.
        "searched": {k: {"kind": v.kind, "values": list(v.values)} for k, v in spec.space.items() if is_sampled(v)},
    }
    return space


def make_scheduler(spec: StudySpec) -> FIFOScheduler | ResumableASHA:
    if spec.scheduler.type == "fifo":
        return FIFOScheduler()
    s = spec.scheduler
    # time_attr "epoch" (our own counter) survives restore; the trainable reports it every epoch.
    return ResumableASHA(
        time_attr="epoch",
        max_t=spec.max_epochs(),
        grace_period=min(s.grace_period, spec.max_epochs()),
        reduction_factor=s.reduction_factor,
    )


def make_search(spec: StudySpec) -> Any:
    if spec.search.type != "optuna":
        if spec.search.seed is None:
            return None  # Tune's default BasicVariantGenerator: grid points x random samples
        # The same seed draws the same random samples, so two runs (e.g. ASHA vs FIFO) compare alike.
        return BasicVariantGenerator(random_state=spec.search.seed)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=spec.search.seed, n_startup_trials=spec.search.startup_trials())
    search = AshaAwareOptunaSearch(sampler=sampler, max_t=spec.max_epochs())
    return ConcurrencyLimiter(search, max_concurrent=spec.search.max_concurrent)


class AshaAwareOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, except that a trial ASHA stopped before max_t reaches Optuna as PRUNED.

    Ray tells Optuna such a trial is COMPLETE with its last (early, low) value, so TPE learns
    from it as if it had finished. PRUNED, with the per-epoch values Ray already reported, is
    what it is; TPE ranks pruned trials by their last intermediate value. A diverged trial is FAIL.
    """

    def __init__(self, *args: Any, max_t: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_t = max_t

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        import optuna

        stopped = result and not error and int(result.get("epoch", self.max_t)) < self.max_t
        if trial_id in self._completed_trials or not stopped:
            return super().on_trial_complete(trial_id, result, error)
        state = optuna.trial.TrialState.FAIL if result.get("diverged") else optuna.trial.TrialState.PRUNED
        self._ot_study.tell(self._ot_trials[trial_id], state=state)
        self._completed_trials.add(trial_id)


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


def progress_reporter(spec: StudySpec) -> tune.CLIReporter:
    """Ray's status table, every 15 s: variant, seed and sampled fields, epoch and the metrics.

    Ray's newer console output prints a box with every trial's whole config when it starts and
    its results when it ends (4,593 lines for 100 small trials). Ray's CLIReporter prints the
    table alone; Tune uses it when RAY_AIR_NEW_OUTPUT=0. The full config lives in params.json.
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    parameters = {VARIANT_KEY: "variant"} if spec.variants else {}
    # Only keys every trial's config has: the reporter fails on a missing one. What varies: the
    # grid and sampled fields, and the seed. With none, the dataset: given no columns, Ray shows
    # the whole config, the study's metadata included.
    parameters.update({k: k for k, v in spec.space.items() if k == "seed" or isinstance(v, Domain)})
    if not parameters:
        parameters = {"dataset": "dataset"}
    return tune.CLIReporter(
        parameter_columns=parameters,
        metric_columns={"epoch": "epoch", "train_loss": "train_loss", spec.metric: spec.metric},
        max_report_frequency=15,
        max_progress_rows=12,
        sort_by_metric=True,  # by the TuneConfig's metric and mode
    )


def result_loggers(spec: StudySpec, experiment_path: str) -> list[Any]:
    """Tune's per-trial result files: result.json (what `study analyze` reads) and progress.csv,
    and the experiment trackers only when the study asks (`loggers`, `tensorboard: true`). Tune
    adds its CSV, JSON and TensorBoard loggers unless told not to (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS),
    and its TensorBoard logger imports tensorboardX, which imports torch: a second of the driver's
    start, and 470 MB."""
    from study.trackers import callbacks

    auto_loggers(False)
    return [
        CSVLoggerCallback(),
        JsonLoggerCallback(),
        *callbacks(spec.trackers(), spec.name, basename(experiment_path)),
    ]


def saved_loggers(experiment_path: str) -> bool:
    """Whether the run's saved Tuner names its result loggers (runs since they are chosen in
    `result_loggers`), read as bytes: `tuner.pkl` is not unpickled here."""
    try:
        return b"JsonLoggerCallback" in read_bytes(join(experiment_path, "tuner.pkl"))
    except OSError:
        return False


class DropMessages(logging.Filter):
    """Drop a logger's records that start with one of `prefixes`."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


class OneLine(logging.Filter):
    """Turn a logger's records that start with `prefix` into `message` and the first line of their
    exception, without the traceback."""

    def __init__(self, prefix: str, message: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.message = message

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(self.prefix):
            exc = record.exc_info[1] if record.exc_info else None
            record.msg = f"{self.message} ({reason(exc) if exc else 'no reason given'})"
            record.args = None
            record.exc_info = record.exc_text = record.stack_info = None
        return True


# A failed save of Tune's state (a full disk, say): the study goes on and a resume continues from
# the last state saved, so one line says what the user needs, not Ray's traceback.
STATE_SAVE_FAILED = (
    "[study] warning: Tune could not save its experiment state; the study goes on, "
    "and a resume continues from the last state saved"
)

# Two of Tune's warnings that tell a study's user the wrong thing. After a stop or a resume, trials
# that had not started have no result.json, which is expected (`study analyze` reads the results
# itself); and `study` prints its own way to continue (`study resume ...`), not Tuner.restore().
TUNE_NOISE = [
    ("ray.tune.analysis.experiment_analysis", DropMessages("Failed to fetch metrics for")),
    ("ray.tune.tune", DropMessages("Experiment has been interrupted, but the most recent state was saved")),
    ("ray.tune.execution.experiment_state", OneLine("Saving experiment state to storage at", STATE_SAVE_FAILED)),
    ("ray.tune.tune", OneLine("Experiment state snapshotting failed", STATE_SAVE_FAILED)),
]


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


def quiet_tune_noise() -> None:
    for name, drop in TUNE_NOISE:
        if drop not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(drop)


def progress(spec: StudySpec, quiet: bool) -> list[Any]:
    """What a running study prints beside Tune's own output: an ETA line, or with `quiet` a line per
    trial as it ends (Ray's status table is then off: verbose 0)."""
    if quiet:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # verbose 0 of this output is silent; the newer one boxes
        return [TrialEndLines(spec.metric, spec.num_trials())]
    return [EtaCallback(spec.num_trials(), spec.max_epochs())]


def make_quiet(tuner: tune.Tuner, spec: StudySpec) -> None:
    """--quiet for a restored Tuner: no status table, a line per trial as it ends. Tuner.restore
    takes no RunConfig, so the restored one is changed in place (Ray's private TunerInternal)."""
    run_config = tuner._local_tuner.get_run_config()
    run_config.verbose, run_config.progress_reporter = 0, None
    kept = [c for c in run_config.callbacks or [] if not isinstance(c, EtaCallback | TrialEndLines)]
    run_config.callbacks = kept + progress(spec, quiet=True)


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


class GrowingSearchGenerator(SearchGenerator):
    """Tune's wrapper of a Searcher, restored with its total raised to `num_samples` when that is
    more than the saved total: the searcher (Optuna, with every trial it has) then suggests more."""

    def __init__(self, searcher: Any, num_samples: int) -> None:
        super().__init__(searcher)
        self.num_samples = num_samples

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._total_samples = max(self._total_samples, self.num_samples)  # SearchGenerator's own count


def grow_search(tuner: tune.Tuner, num_samples: int) -> None:
    """Let a restored optuna search run to `num_samples` trials in all (study.yaml's, which
    `study resume --num-samples` raises). Ray restores the searcher's total from its saved state;
    the generator above raises it as it is restored."""
    # Tuner.restore takes no TuneConfig, so the restored one is changed in place (Ray's private
    # TunerInternal): tune.run uses a SearchAlgorithm it is given as it is, a Searcher it wraps.
    config = tuner._local_tuner._tune_config
    if not isinstance(config.search_alg, SearchGenerator):
        config.search_alg = GrowingSearchGenerator(config.search_alg, num_samples)
