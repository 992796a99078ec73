"""Plots in one style (STYLE); learning curves: validation and test accuracy (%), test and train loss
against epoch, a line per variant, a band over seeds."""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd


def plot_file_name(experiment: str) -> str:
    """curves_EXPERIMENT.png, with anything but letters, digits and ._+- replaced: the name comes
    from the trial files, which anyone may have written, so it must not choose a path."""
    return "curves_" + re.sub(r"[^A-Za-z0-9._+-]", "_", experiment).lstrip(".")[:100] + ".png"


def variant_label(variant: str, trials: pd.DataFrame) -> str:
    """ "cnn64 (3 trials)", or "cnn64 (3 trials, 1 to epoch 6)" when ASHA stopped some: the later
    epochs of the curve then average fewer trials."""
    n, last = trials["trial_id"].nunique(), int(trials["epoch"].max())
    full = trials.loc[trials["epoch"] == last, "trial_id"].nunique()
    count = f"{n} trial{'s' if n != 1 else ''}"
    return f"{variant} ({count})" if full == n else f"{variant} ({count}, {full} to epoch {last})"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: plots go to files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Every plot of the tool: white, light grid, the same fonts, whatever style another library set.
STYLE = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "axes.edgecolor": "#333333",
    "axes.grid": True,
    "grid.color": "#b0b0b0",
    "grid.alpha": 0.4,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8,
}


@contextlib.contextmanager
def style() -> Iterator[Any]:
    """pyplot inside the tool's one style (matplotlib's defaults plus STYLE)."""
    plt = pyplot()
    with plt.style.context("default"), plt.rc_context(STYLE):
        yield plt


def log_ticks(axis: Any, low: float, high: float) -> None:
    """Readable labels on a log axis from `low` to `high`: at 1, 2 and 5 of each decade over a short
    range, 1 and 3 over a longer one, each decade over a long one (more would overlap); written as
    0.002 rather than 2x10^-3."""
    import math

    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    decades = math.log10(high / low)
    subs = (1.0, 2.0, 5.0) if decades <= 1.5 else (1.0, 3.0) if decades <= 3.2 else (1.0,)
    if decades < 0.5:  # too short for 1, 2 and 5 to fall in it
        subs = tuple(float(n) for n in range(1, 10))
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def learning_curves(frame: pd.DataFrame, experiment: str, path: str) -> str:
    """Write one PNG for `experiment` to `path`: mean over seeds, band = min..max over seeds."""
    plt = pyplot()
    figure = curves_figure(frame, experiment)
    save_figure(figure, path, dpi=110)
    plt.close(figure)
    return path


def curves_figure(frame: pd.DataFrame, experiment: str) -> Any:
    """The learning curves of `experiment`, a panel per metric, the legend below the panels."""
    with style() as plt:
        return draw_curves(plt, frame, experiment)


def draw_curves(plt: Any, frame: pd.DataFrame, experiment: str) -> Any:
    from matplotlib.ticker import MaxNLocator

    rows = frame[frame["experiment"] == experiment]
    panels = (  # (metric, title, scale: accuracy in % as in the tables, losses on a log axis)
        ("val_acc", "validation accuracy (%)", 100.0),  # what selection reads
        ("test_acc", "test accuracy (%)", 100.0),
        ("test_loss", "test loss", None),
        ("train_loss", "train loss", None),
    )
    panels = tuple(p for p in panels if p[0] in rows and rows[p[0]].notna().any())
    fig, axes = plt.subplots(1, len(panels), figsize=(5.3 * len(panels), 4.8), layout="constrained", squeeze=False)
    axes = axes[0]
    styles = zip(itertools.cycle(("-", "--", ":", "-.")), itertools.cycle(("o", "s", "^", "D", "v")), strict=False)
    colors = itertools.cycle(plt.cm.tab10.colors)
    for variant, trials in rows.groupby("variant", sort=False):
        # Line style and marker differ too, so curves that lie on top of each other stay visible.
        (linestyle, marker), color = next(styles), next(colors)
        by_epoch = trials.groupby("epoch")
        label = variant_label(variant, trials)
        for ax, (metric, _, scale) in zip(axes, panels, strict=True):
            curve = by_epoch[metric].agg(["mean", "min", "max"]) * (scale or 1.0)
            ax.plot(
                curve.index,
                curve["mean"],
                color=color,
                linestyle=linestyle,
                marker=marker,
                ms=4,
                label=label,
            )
            ax.fill_between(curve.index, curve["min"], curve["max"], color=color, alpha=0.15, lw=0)
    for ax, (_, title, scale) in zip(axes, panels, strict=True):
        ax.set(xlabel="epoch", ylabel=title, title=f"{experiment}: {title}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        if scale is None:
            ax.set_yscale("log")
            log_ticks(ax.yaxis, *ax.get_ylim())
    # Below the panels, off the curves: a legend inside a panel hides the points it lies on.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=min(len(labels), 4),
        title="mean over the trials at each epoch; band = their range",
        title_fontsize=8,
    )
    return fig


def save_figure(figure: Any, path: str, **kwargs: Any) -> None:
    """A figure as PNG, written through storage.write_file (never through a symbolic link)."""
    import io

    from study import storage

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **kwargs)
    storage.write_file(path, buffer.getvalue())
