"""A search's plots: the metric against each sampled field (slice), and in parallel coordinates."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from study.analysis.importance import complete_trials


def search_plots(study: Any, out: str, experiment: str) -> list[str]:
    """slice_EXPERIMENT.png and parallel_EXPERIMENT.png: the metric against each sampled field, and
    in parallel coordinates, over the trials that reached max_t (as Optuna's own plots)."""
    from study.analysis.plots import plot_file_name, pyplot, save_figure

    plt = pyplot()
    written = []
    for kind, draw in (("slice", slice_figure), ("parallel", parallel_figure)):
        figure = draw(study, experiment)
        path = os.path.join(out, plot_file_name(experiment).replace("curves_", f"{kind}_"))
        save_figure(figure, path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def plotted_trials(study: Any) -> tuple[str, list[str], list[Any]]:
    """The metric's name, the sampled fields and the trials a search plot shows (COMPLETE, finite)."""
    metric = (study.metric_names or ["objective"])[0]
    fields = sorted({name for t in study.trials for name in t.distributions})
    return metric, fields, complete_trials(study)


def field_distribution(study: Any, field: str) -> Any:
    return next(t.distributions[field] for t in study.trials if field in t.distributions)


def axis_label(study: Any, field: str) -> str:
    return f"{field} (log scale)" if getattr(field_distribution(study, field), "log", False) else field


def slice_figure(study: Any, experiment: str) -> Any:
    """The metric against each sampled field, a panel per field; colour: Optuna's trial number (the
    order the trials were added to optuna.db, 0 to n - 1), over all n trials of the study."""
    import optuna.distributions as d
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    from study.analysis.plots import log_ticks, style

    metric, fields, trials = plotted_trials(study)
    with style() as plt:
        figure, axes = plt.subplots(
            1, max(len(fields), 1), figsize=(3.4 * max(len(fields), 1) + 1.6, 4.0), sharey=True, layout="constrained"
        )
        axes = np.ravel(axes)
        numbers = Normalize(0, max(len(study.trials) - 1, 1))
        points = None
        for ax, field in zip(axes, fields, strict=False):
            shown = [t for t in trials if field in t.params]
            dist = field_distribution(study, field)
            x = [t.params[field] for t in shown]
            if isinstance(dist, d.CategoricalDistribution):
                choices = list(dist.choices)
                x = [choices.index(v) for v in x]
                ax.set_xticks(range(len(choices)), [str(c) for c in choices])
                ax.set_xlim(-0.5, len(choices) - 0.5)
            points = ax.scatter(
                x,
                [t.value for t in shown],
                c=[t.number for t in shown],
                cmap="viridis",
                norm=numbers,
                s=45,
                edgecolors="black",
                linewidths=0.5,
                zorder=3,
            )
            if getattr(dist, "log", False):
                ax.set_xscale("log")
                ax.set_xlim(dist.low / 1.15, dist.high * 1.15)  # the searched range, so that it has ticks
                log_ticks(ax.xaxis, *ax.get_xlim())
            elif not isinstance(dist, d.CategoricalDistribution):
                pad = 0.05 * (dist.high - dist.low) or 0.5
                ax.set_xlim(dist.low - pad, dist.high + pad)
                if isinstance(dist, d.IntDistribution):
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(axis_label(study, field))
        axes[0].set_ylabel(metric)
        if points is not None:
            bar = figure.colorbar(
                points, ax=axes, label=f"trial number (0 to {len(study.trials) - 1}, as in optuna.db)"
            )
            bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        figure.suptitle(
            f"{experiment}: {metric} at max_t against each sampled field "
            f"({len(trials)} of {len(study.trials)} trials reached max_t)"
        )
    return figure


def parallel_figure(study: Any, experiment: str) -> Any:
    """Parallel coordinates: an axis for the metric and one per sampled field, a line per trial
    coloured by the metric (viridis, reversed for a minimised one: the worst line dark, never white),
    the best drawn on top."""
    import optuna.distributions as d
    from matplotlib.colors import Normalize
    from matplotlib.ticker import LogLocator, MaxNLocator

    from study.analysis.plots import style

    def nice(a: float, b: float, log: bool = False, integer: bool = False) -> list[float]:
        """Round tick values within [a, b] (1, 2 and 5 of each decade on a log axis)."""
        locator = LogLocator(subs=(1.0, 2.0, 5.0)) if log else MaxNLocator(5, integer=integer)
        ticks = [float(v) for v in locator.tick_values(a, b) if a - 1e-12 <= v <= b + 1e-12]
        return ticks if len(ticks) >= 2 else [a, b]

    metric, fields, trials = plotted_trials(study)
    maximize = study.direction.name == "MAXIMIZE"
    trials = sorted(trials, key=lambda t: t.value if maximize else -t.value)  # the best last: on top
    values = [t.value for t in trials]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5

    def scale(field: str) -> tuple[Any, list[tuple[float, str]]]:
        """value -> [0, 1] on the field's axis, and its tick positions with labels."""
        if field == metric:
            ticks = nice(low, high)
            return (lambda v: (v - low) / (high - low)), [((v - low) / (high - low), f"{v:.3g}") for v in ticks]
        dist = field_distribution(study, field)
        if isinstance(dist, d.CategoricalDistribution):
            choices = list(dist.choices)
            step = 1 / max(len(choices) - 1, 1)
            return (lambda v: choices.index(v) * step), [(i * step, str(c)) for i, c in enumerate(choices)]
        a, b = float(dist.low), float(dist.high)
        if getattr(dist, "log", False):
            ticks = nice(a, b, log=True)
            a, b = math.log10(a), math.log10(b)
            return (lambda v: (math.log10(v) - a) / (b - a)), [((math.log10(v) - a) / (b - a), f"{v:g}") for v in ticks]
        if b <= a:
            b = a + 1
        ticks = nice(a, b, integer=isinstance(dist, d.IntDistribution))
        return (lambda v: (v - a) / (b - a)), [((v - a) / (b - a), f"{v:.3g}") for v in ticks]

    columns = [metric, *fields]
    scales = [scale(c) for c in columns]
    with style() as plt:
        figure, ax = plt.subplots(figsize=(2.3 * len(columns) + 2.0, 4.6), layout="constrained")
        colours = Normalize(low, high)
        cmap = plt.get_cmap("viridis" if maximize else "viridis_r")  # the best bright, the worst dark
        for t in trials:
            y = [
                to_axis(t.value if c == metric else t.params.get(c))
                for c, (to_axis, _) in zip(columns, scales, strict=True)
            ]
            ax.plot(range(len(columns)), y, color=cmap(colours(t.value)), lw=1.8, alpha=0.9)
        for i, (_, ticks) in enumerate(scales):
            ax.axvline(i, color="#333333", lw=1)
            for position, label in ticks:
                ax.text(
                    i + 0.04,
                    position,
                    label,
                    va="center",
                    ha="left",
                    fontsize=8,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
                )
        ax.set_xticks(range(len(columns)), [metric, *(axis_label(study, f) for f in fields)])
        ax.set_xlim(-0.15, len(columns) - 1 + 0.6)  # room for the last axis's tick labels
        ax.set_ylim(-0.05, 1.05)
        ax.set_yticks([])
        ax.grid(False)
        ax.set_ylabel("each axis: its own range")
        bar = figure.colorbar(plt.cm.ScalarMappable(colours, cmap), ax=ax, label=metric)
        bar.ax.tick_params(labelsize=8)
        ax.set_title(f"{experiment}: the {len(trials)} trials that reached max_t, coloured by {metric}")
    return figure
