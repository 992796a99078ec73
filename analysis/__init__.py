"""Analysis of study experiments: tidy loading, the five tables (per variant, effects, against the report, compute, best trials), learning-curve plots."""

from study.analysis.load import load_experiment, load_experiments
from study.analysis.stats import mean_ci
from study.analysis.summary import summarize_experiments
from study.analysis.tables import against_report, best_trials, compute, effects, per_variant

__all__ = [
    "against_report",
    "best_trials",
    "compute",
    "effects",
    "load_experiment",
    "load_experiments",
    "mean_ci",
    "per_variant",
    "summarize_experiments",
]
