"""Which searched fields mattered: Optuna's PED-ANOVA importance, as optuna-dashboard computes it."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pandas as pd

from study.errors import plural

# Below this many trials that reached max_t, a ranking of parameters is a few trials' luck (docs/analysis.md).
MIN_IMPORTANCE_TRIALS = 10


def complete_trials(study: Any) -> list[Any]:
    """The trials importance is computed over, as Optuna's evaluators select them: COMPLETE (reached
    max_t) with a finite value."""
    import optuna

    return [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if math.isfinite(t.value)
    ]


def importance_note(study: Any) -> str | None:
    """Why the study gets no importance table (too few complete trials, an objective that does not
    vary, nothing sampled), in one line; None when it gets one."""
    complete = complete_trials(study)
    metric = (study.metric_names or ["the objective"])[0]
    if study.trials and not study.trials[0].distributions:
        return "no importance: nothing is sampled"
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return (
            f"no importance: {plural(len(complete), 'trial')} reached max_t (COMPLETE); "
            f"importance needs at least {MIN_IMPORTANCE_TRIALS}"
        )
    if len({t.value for t in complete}) == 1:
        return f"no importance: {metric} is the same in all {len(complete)} trials that reached max_t"
    return None


def importance_target(study: Any) -> Any:
    """optuna-dashboard's target: PED-ANOVA ranks low values best, so a maximised metric is negated."""
    import optuna

    if study.direction == optuna.study.StudyDirection.MAXIMIZE:
        return lambda t: -t.values[0]
    return lambda t: t.values[0]


def importances(study: Any) -> pd.DataFrame:
    """Each searched parameter's importance as optuna-dashboard computes it (Optuna's PED-ANOVA,
    default quantiles, over the COMPLETE trials), with the number of trials it used; no rows when
    `importance_note` says why not."""
    import optuna

    columns = ["parameter", "importance", "n_trials"]
    if importance_note(study) is not None:
        return pd.DataFrame(columns=columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA warns whenever a target is given (as the dashboard does)
        values = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), target=importance_target(study)
        )
    n_trials = len(complete_trials(study))
    return pd.DataFrame({"parameter": list(values), "importance": list(values.values()), "n_trials": n_trials})[columns]
