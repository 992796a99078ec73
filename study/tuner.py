"""Ray Tune objects from a checked `StudySpec`: param space, scheduler, search, Tuner."""

from __future__ import annotations

import logging
import os
from typing import Any

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from study.asha import ResumableASHA
from study.entry import train_trial
from study.errors import StudyError, reason
from study.progress import EtaCallback
from study.schema import META_KEY, VARIANT_KEY
from study.space import Domain, StudySpec, is_sampled
from study.state_backup import StateBackup
from study.storage import basename, is_uri, join, parent, read_bytes


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


def param_space(spec: StudySpec) -> dict[str, Any]:
    """Tune's param_space: the searched fields, the named variants, and the study's metadata."""
    space: dict[str, Any] = {k: to_tune_domain(v) if isinstance(v, Domain) else v for k, v in spec.space.items()}
    space["dataset"] = spec.dataset
    if spec.variants:
        space[VARIANT_KEY] = tune.grid_search([{"name": n, **o} for n, o in spec.variants.items()])
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
    sampler = optuna.samplers.TPESampler(seed=spec.search.seed)
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
# (`study.checkpoints.prune`), so the disk holds what the file says.
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
    variant = (trial.config.get(VARIANT_KEY) or {}).get("name", "trial")
    return f"{variant}-s{trial.config.get('seed', 0)}-{trial.trial_id.split('_')[-1]}"


def progress_reporter(spec: StudySpec) -> tune.CLIReporter:
    """Ray's status table, every 15 s: variant, seed and sampled fields, epoch and the metrics.

    Ray's newer console output prints a box with every trial's whole config when it starts and
    its results when it ends (4,593 lines for 100 small trials). Ray's CLIReporter prints the
    table alone; Tune uses it when RAY_AIR_NEW_OUTPUT=0. The full config lives in params.json.
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    parameters = {f"{VARIANT_KEY}/name": "variant"} if spec.variants else {}
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


# Set by the user before `study` started, it wins over the choice below.
USER_AUTO_LOGGERS = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")


def auto_loggers(enabled: bool) -> None:
    """Whether Tune adds its CSV, JSON and TensorBoard loggers to a run that lacks them."""
    if USER_AUTO_LOGGERS is None:
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0" if enabled else "1"


def result_loggers(tensorboard: bool) -> list[Any]:
    """Tune's per-trial result files: result.json (what `study analyze` reads) and progress.csv,
    and TensorBoard event files only when the study asks (`tensorboard: true`). Tune adds all
    three unless told not to (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS), and its TensorBoard logger
    imports tensorboardX, which imports torch: a second of the driver's start, and 470 MB."""
    auto_loggers(False)
    loggers: list[Any] = [CSVLoggerCallback(), JsonLoggerCallback()]
    if tensorboard:
        loggers.append(TBXLoggerCallback())
    return loggers


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


# Two of Tune's warnings that tell a study's user the wrong thing. After a stop or a resume, trials
# that had not started have no result.json, which is expected (`study analyze` reads the results
# itself); and `study` prints its own way to continue (`study resume ...`), not Tuner.restore().
TUNE_NOISE = {
    "ray.tune.analysis.experiment_analysis": DropMessages("Failed to fetch metrics for"),
    "ray.tune.tune": DropMessages("Experiment has been interrupted, but the most recent state was saved"),
}


def quiet_tune_noise() -> None:
    for name, drop in TUNE_NOISE.items():
        if drop not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(drop)


def make_tuner(spec: StudySpec, experiment_path: str, resources: dict[str, float]) -> tune.Tuner:
    """A new Tuner writing into `experiment_path` (storage folder / run name)."""
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
            verbose=1,  # the status table only (see progress_reporter)
            progress_reporter=progress_reporter(spec),
            callbacks=[
                StateBackup(experiment_path),
                EtaCallback(spec.num_trials(), spec.max_epochs()),
                *result_loggers(spec.tensorboard),
            ],
        ),
    )


def restore_tuner(
    experiment_path: str, resources: dict[str, float], spec: StudySpec, trust: bool = False
) -> tune.Tuner:
    """Ray's own restore: finished trials stay finished, the rest continue from their checkpoints."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the saved CLIReporter, not a config box per trial
    # A run saved with its loggers keeps them; an older one gets Tune's defaults, as it had then.
    auto_loggers(not saved_loggers(experiment_path))
    quiet_tune_noise()
    trainable = make_trainable(resources, experiment_path, spec.keep_checkpoints, spec.stop_epochs(), trust)
    try:
        return tune.Tuner.restore(experiment_path, trainable, resume_unfinished=True, resume_errored=True)
    except (ModuleNotFoundError, AttributeError) as exc:  # tuner.pkl names code this version lacks
        if isinstance(exc, AttributeError) and "Can't get attribute" not in str(exc):
            raise  # not unpickling's missing name: a bug, shown as one
        raise StudyError(
            f"{experiment_path}: Tune's saved state (tuner.pkl) names code that this version of study does not "
            f"have ({reason(exc)}); resume it with the version that made it (environment.json names it)"
        ) from None
