"""The leaderboard plot: gIoU against cIoU, one point per model, with 95% intervals as error bars.

Built with matplotlib's object API (no pyplot state), so concurrent requests never share a figure.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox

SUBMISSION_COLOR = "#d62728"
BASELINE_COLOR = "#7f7f7f"
MAX_LABEL = 24


def _errors(frame: pd.DataFrame, metric: str) -> list[list[float]]:
    """Asymmetric error-bar lengths from the CI columns (0 where an interval is missing)."""
    value = frame[metric].astype(float)
    low = (value - frame[f"{metric} CI low"].astype(float)).fillna(0).clip(lower=0)
    high = (frame[f"{metric} CI high"].astype(float) - value).fillna(0).clip(lower=0)
    return [low.tolist(), high.tolist()]


def _label(model: str) -> str:
    return model if len(model) <= MAX_LABEL else model[: MAX_LABEL - 1] + "…"


def score_plot(frame: pd.DataFrame) -> Figure:
    """Scatter of ``frame`` (columns: model, baseline, gIoU, cIoU and their CI bounds, in percent)."""
    figure = Figure(figsize=(6.4, 4.4), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)  # a renderer to measure label sizes with
    axes = figure.add_subplot()
    axes.set_xlabel("gIoU (%)  · mean IoU per question")
    axes.set_ylabel("cIoU (%)  · cumulative IoU")
    axes.set_xlim(0, 100)
    axes.set_ylim(0, 100)
    axes.grid(True, alpha=0.3)
    frame = frame.dropna(subset=["gIoU", "cIoU"])
    if frame.empty:
        axes.text(50, 50, "No scored submissions yet", ha="center", va="center", color=BASELINE_COLOR)
        return figure
    for is_baseline, group in frame.groupby("baseline"):
        color = BASELINE_COLOR if is_baseline else SUBMISSION_COLOR
        axes.errorbar(
            group["gIoU"],
            group["cIoU"],
            xerr=_errors(group, "gIoU"),
            yerr=_errors(group, "cIoU"),
            fmt="s" if is_baseline else "o",
            mfc="white" if is_baseline else color,
            color=color,
            ecolor=color,
            elinewidth=1,
            capsize=3,
            label="baseline" if is_baseline else "submission",
        )
    figure.draw_without_rendering()  # settle the layout so label positions are final
    _place_labels(axes, frame)
    axes.legend(loc="lower right")  # high gIoU with low cIoU is rare: that corner stays empty
    return figure


# Offsets (points) tried in turn for a label: right of the point, left of it, then stacked higher
# and higher on either side (crowded points bunch up near the origin).
LABEL_OFFSETS = [(dx, 3 + 11 * step) for step in range(8) for dx in (6, -6)] + [(6, -12), (-6, -12)]


def _place_labels(axes: Axes, frame: pd.DataFrame) -> None:
    """Name each point, moving a label to the first offset where it overlaps no earlier label.

    Baselines and weak submissions bunch up near the origin; without this their names print over
    each other. Labels that fit nowhere go right of their point.
    """
    renderer = axes.figure.canvas.get_renderer()
    placed: list[Bbox] = []
    axes_box = axes.get_window_extent(renderer)
    for model, x, y, baseline in zip(frame["model"], frame["gIoU"], frame["cIoU"], frame["baseline"], strict=True):
        color = BASELINE_COLOR if baseline else SUBMISSION_COLOR
        for dx, dy in LABEL_OFFSETS:
            label = _annotate(axes, str(model), x, y, dx, dy, color)
            box = _text_box(label, renderer)
            inside = axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1 and axes_box.y0 <= box.y0 and box.y1 <= axes_box.y1
            if inside and not any(box.overlaps(other) for other in placed):
                break
            label.remove()
        else:  # nowhere free: right of the point, overlapping if it must
            label = _annotate(axes, str(model), x, y, *LABEL_OFFSETS[0], color)
            box = _text_box(label, renderer)
        placed.append(box)


def _text_box(label: Annotation, renderer: RendererBase) -> Bbox:
    """Where the label's text lands, in pixels (an annotation's own extent includes its leader line)."""
    label.update_positions(renderer)
    return Text.get_window_extent(label, renderer)


def _annotate(axes: Axes, model: str, x: float, y: float, dx: float, dy: float, color: str) -> Annotation:
    """A label ``(dx, dy)`` points from its point; a thin leader line when it had to move away."""
    far = abs(dy) > 14
    label = axes.annotate(
        _label(model),
        (x, y),
        xytext=(dx, dy),
        textcoords="offset points",
        ha="left" if dx > 0 else "right",
        va="center" if far else "baseline",
        fontsize=9,
        color=color,
        arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6, "alpha": 0.7} if far else None,
    )
    label.set_in_layout(False)  # placed inside the axes already; the layout must not move them
    return label
