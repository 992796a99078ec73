"""The plots a reader reads: one white style, labelled axes, colour bars and legends off the data."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.test_analysis import FRAME, search_frame

VALUES = [0.9, 0.3, 0.5, 0.7, 0.4, 0.8]  # test_loss of trials 0..5; trial 6 is pruned


@pytest.fixture
def study():
    from study.analysis.search import optuna_study

    return optuna_study(search_frame(VALUES, metric="test_loss", mode="min"))


def rendered(figure):
    """Draw the figure (as when saved), so that text and legends have their final places."""
    figure.canvas.draw()
    return figure.canvas.get_renderer()


def white(color) -> bool:
    from matplotlib.colors import to_rgba

    return to_rgba(color) == (1.0, 1.0, 1.0, 1.0)


def test_curves_after_a_search_plot_are_as_white_as_an_ablations(tmp_path):
    """Optuna's plotting used to set its grey ggplot style for the whole process."""
    from study.analysis.plots import learning_curves
    from study.analysis.summary import summarize_searches

    frame = search_frame(VALUES)
    summarize_searches(frame, str(tmp_path), plots=True)
    path = learning_curves(frame, "search", str(tmp_path / "curves.png"))
    for png in (path, tmp_path / "slice_search.png", tmp_path / "parallel_search.png"):
        image = np.asarray(Image.open(io.BytesIO(open(png, "rb").read())).convert("RGB"))
        pixels = image.reshape(-1, 3).astype(int)
        grey = (pixels.max(axis=1) == pixels.min(axis=1)) & (pixels[:, 0] >= 200) & (pixels[:, 0] < 250)
        assert grey.mean() < 0.1, png  # no grey background (ggplot's is 229, 229, 229), only grid lines


def test_every_plot_keeps_the_tools_style_whatever_style_is_set(study):
    import matplotlib.pyplot as plt

    from study.analysis.plots import curves_figure
    from study.analysis.search_plots import parallel_figure, slice_figure

    with plt.style.context("ggplot"):
        figures = [curves_figure(FRAME, "exp"), slice_figure(study, "search"), parallel_figure(study, "search")]
    for figure in figures:
        assert white(figure.get_facecolor())
        assert all(white(ax.get_facecolor()) for ax in figure.axes)
        plt.close(figure)


def test_the_legend_of_the_curves_covers_no_panel():
    from study.analysis.plots import curves_figure

    figure = curves_figure(FRAME, "exp")
    renderer = rendered(figure)
    (legend,) = figure.legends
    box = legend.get_window_extent(renderer)
    assert not any(box.overlaps(ax.get_tightbbox(renderer)) for ax in figure.axes)
    for ax in figure.axes:
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel()


def test_the_slice_plot_names_the_metric_labels_log_ticks_and_numbers_every_trial(study):
    from study.analysis.search_plots import slice_figure

    figure = slice_figure(study, "search")
    renderer = rendered(figure)
    *panels, bar = figure.axes
    assert [ax.get_xlabel() for ax in panels] == ["dropout", "lr (log scale)"]
    assert panels[0].get_ylabel() == "test_loss"  # the metric, not "Objective Value"
    lr = panels[1]
    assert lr.get_xscale() == "log"
    shown = [
        t for t in lr.get_xticklabels() if t.get_text() and lr.get_xlim()[0] <= t.get_position()[0] <= lr.get_xlim()[1]
    ]
    assert len(shown) >= 2  # labels a reader can read the learning rate from
    boxes = [t.get_window_extent(renderer) for t in shown]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    # The colour is Optuna's trial number over all the study's trials (the pruned one too).
    assert bar.get_ylim() == (0, len(study.trials) - 1) and "trial number" in bar.get_ylabel()
    (points,) = panels[0].collections
    assert sorted(points.get_array()) == [t.number for t in study.trials if t.state.name == "COMPLETE"]
    assert not bar.get_window_extent(renderer).overlaps(panels[-1].get_tightbbox(renderer))


def test_parallel_coordinates_name_the_metric_draw_the_worst_line_dark_and_keep_the_bar_off(study):
    from matplotlib.colors import to_rgb

    from study.analysis.search_plots import parallel_figure

    figure = parallel_figure(study, "search")
    renderer = rendered(figure)
    ax, bar = figure.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["test_loss", "dropout", "lr (log scale)"]
    assert bar.get_ylabel() == "test_loss"
    # test_loss is minimised: the worst trial (0.9) is drawn first, in a dark colour on white.
    worst = ax.lines[0]
    assert worst.get_ydata()[0] == pytest.approx(1.0)
    assert sum(to_rgb(worst.get_color())) / 3 < 0.5
    # Tick labels on every axis, none under the colour bar or outside the figure.
    labels = [t for t in ax.texts if t.get_text()]
    assert len(labels) >= 3 * 2
    figure_box = figure.bbox
    for text in [*labels, *ax.get_xticklabels()]:
        box = text.get_window_extent(renderer)
        assert not box.overlaps(bar.get_window_extent(renderer)), text.get_text()
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1, text.get_text()
