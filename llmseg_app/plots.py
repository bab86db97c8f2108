"""The leaderboard plot: gIoU against cIoU, one point per model, with 95% intervals as error bars.

Built with matplotlib's object API (no pyplot state), so concurrent requests never share a figure.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

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
        for model, x, y in zip(group["model"], group["gIoU"], group["cIoU"], strict=True):
            if not (math.isnan(x) or math.isnan(y)):
                right_edge = x > 75  # keep labels of strong models inside the axes
                axes.annotate(
                    _label(str(model)),
                    (x, y),
                    xytext=(-5 if right_edge else 5, 4),
                    textcoords="offset points",
                    ha="right" if right_edge else "left",
                    fontsize=9,
                    color=color,
                )
    axes.legend(loc="upper left")
    return figure
