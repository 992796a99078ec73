"""Learning curves: test accuracy (%), test loss and train loss against epoch; a line per variant, a band over seeds."""

from __future__ import annotations

import itertools
import os
import re

import pandas as pd


def plot_file_name(experiment: str) -> str:
    """curves_EXPERIMENT.png, with anything but letters, digits and ._+- replaced: the name comes
    from the trial files, which anyone may have written, so it must not choose a path."""
    return "curves_" + re.sub(r"[^A-Za-z0-9._+-]", "_", experiment).lstrip(".")[:100] + ".png"


def learning_curves(frame: pd.DataFrame, experiment: str, path: str) -> str:
    """Write one PNG for `experiment` to `path`: mean over seeds, band = min..max over seeds."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    rows = frame[frame["experiment"] == experiment]
    panels = (  # (metric, title, scale: accuracy in % as in the tables, losses on a log axis)
        ("test_acc", "test accuracy (%)", 100.0),
        ("test_loss", "test loss", None),
        ("train_loss", "train loss", None),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 4.2))
    styles = zip(itertools.cycle(("-", "--", ":", "-.")), itertools.cycle(("o", "s", "^", "D", "v")), strict=False)
    colors = itertools.cycle(plt.cm.tab10.colors)
    for variant, trials in rows.groupby("variant", sort=False):
        # Line style and marker differ too, so curves that lie on top of each other stay visible.
        (linestyle, marker), color = next(styles), next(colors)
        by_epoch = trials.groupby("epoch")
        for ax, (metric, _, scale) in zip(axes, panels, strict=True):
            curve = by_epoch[metric].agg(["mean", "min", "max"]) * (scale or 1.0)
            ax.plot(
                curve.index,
                curve["mean"],
                color=color,
                linestyle=linestyle,
                marker=marker,
                ms=4,
                label=f"{variant} ({trials['trial_id'].nunique()} trials)",
            )
            ax.fill_between(curve.index, curve["min"], curve["max"], color=color, alpha=0.15, lw=0)
    for ax, (_, title, scale) in zip(axes, panels, strict=True):
        ax.set(xlabel="epoch", ylabel=title, title=f"{experiment}: {title}")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        if scale is None:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 0.5, 1, 2 rather than 2x10^0
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    axes[0].legend(fontsize=8, title="mean over the trials at each epoch;\nband = their range", title_fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
