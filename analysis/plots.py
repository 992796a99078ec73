"""Learning curves: test_acc and train_loss against epoch, a line per variant, a band over seeds."""

from __future__ import annotations

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

    f = frame[frame["experiment"] == experiment]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (variant, g), color in zip(f.groupby("variant", sort=False), plt.cm.tab10.colors * 10, strict=False):
        by_epoch = g.groupby("epoch")
        for ax, metric in zip(axes, ("test_acc", "train_loss"), strict=True):
            curve = by_epoch[metric].agg(["mean", "min", "max", "count"])
            ax.plot(
                curve.index,
                curve["mean"],
                color=color,
                marker="o",
                ms=3,
                label=f"{variant} ({g['trial_id'].nunique()} trials)",
            )
            ax.fill_between(curve.index, curve["min"], curve["max"], color=color, alpha=0.2, lw=0)
    axes[0].set(xlabel="epoch", ylabel="test accuracy", title=f"{experiment}: test accuracy")
    axes[1].set(xlabel="epoch", ylabel="train loss", title=f"{experiment}: train loss", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    axes[1].yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 0.5, 1, 2 rather than 2x10^0
    axes[1].yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    axes[0].legend(fontsize=8, title="mean over the trials at each epoch;\nband = their range", title_fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
