"""What a running study prints and logs: Ray's status table or a line per trial, result files, quieter Tune."""

from __future__ import annotations

import logging
import os
from typing import Any

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from study.errors import reason
from study.names import VARIANT_KEY
from study.space import Domain, StudySpec
from study.storage import basename, join, read_bytes
from study.tuning.progress import EtaCallback, TrialEndLines
from study.tuning.settings import auto_loggers


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
