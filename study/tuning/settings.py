"""The environment variables of Tune's that study sets, each only where the user has not."""

from __future__ import annotations

import os

# Set by the user before `study` started, these win over the choices below.
USER_STATE_PERIOD = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")
USER_AUTO_LOGGERS = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")


def state_save_period(num_trials: int) -> float:
    """Seconds between saves of Tune's experiment state: 10 ms per trial, from 1 s to 60 s.

    Tune's state holds every trial and is written whole at each save, so saving it after every
    result (TUNE_GLOBAL_CHECKPOINT_S=0) costs time and bytes per result that grow with the
    number of trials; a period that grows with the state keeps both flat per result
    (docs/performance.md). Ray's own "auto" waits at least 10 s, whatever the size. A stale
    state costs no repeated epochs: a resumed trial continues from its newest checkpoint,
    whatever Tune last recorded (study.trust.recovery).
    """
    return min(60.0, max(1.0, 0.01 * num_trials))


def set_state_save_period(num_trials: int) -> None:
    if USER_STATE_PERIOD is None:
        os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = f"{state_save_period(num_trials):g}"


def auto_loggers(enabled: bool) -> None:
    """Whether Tune adds its CSV, JSON and TensorBoard loggers to a run that lacks them."""
    if USER_AUTO_LOGGERS is None:
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0" if enabled else "1"
