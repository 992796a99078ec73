"""Ray's ASHA scheduler, with rungs that survive a resume."""

from __future__ import annotations

import posixpath
from typing import Any

from ray.tune.schedulers import ASHAScheduler

from study.storage import json_lines

RESULT_FILE = "result.json"  # Tune's JsonLoggerCallback: one JSON line per reported result


class ResumableASHA(ASHAScheduler):
    """ASHA whose rungs hold, after `study resume`, what they held before the stop.

    Tune saves its searcher's state with the experiment, but not its scheduler's: Ray's ASHA
    restarts with empty rungs, so the first trials to reach each rung after a resume would all
    pass, and a resumed study would train far more epochs than an uninterrupted one. Tune adds every restored trial again, finished or not;
    then its results so far (its `result.json`) go through its bracket as ASHA saw them when
    they were reported, which records each rung's value. A new trial has no results, so nothing
    is read for it (on s3:// that is one request saved per trial). The stop decisions of the
    replay are not acted on: those trials are stopped or continue as they were. A trial whose
    results Tune's state had not yet recorded reports them again itself when it resumes
    (`replayed`), and ASHA sees them then.
    """

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        if not getattr(trial, "has_reported_at_least_once", True):
            return  # a new trial (or one Tune's state saw no result of): no file to read
        bracket = self._trial_info[trial.trial_id]
        for result in saved_results(trial):
            step, value = result.get(self._time_attr), result.get(self._metric)
            if is_number(step) and is_number(value):
                bracket.on_result(trial, step, self._metric_op * value)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def saved_results(trial: Any) -> list[dict[str, Any]]:
    """The results a trial reported before this run, from its folder in the experiment's storage.

    Plain JSON, read as numbers only; a line cut short by a crash is skipped; none for a new trial.
    """
    try:
        filesystem, folder = trial.storage.storage_filesystem, trial.path
    except (AttributeError, RuntimeError):  # a new trial: Tune has not named its folder yet
        return []
    if not folder:
        return []
    try:
        with filesystem.open_input_stream(posixpath.join(folder, RESULT_FILE)) as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError:  # no results: a trial that never reported
        return []
    return json_lines(text)
