"""The Leaderboard tab: the ranked table with column groups, search and CSV, the plot, reported results.

Computing the table belongs to ``leaderboard``; this module only picks columns, styles and plots.
A failing refresh shows its error in the tab and leaves the rest of the page working.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from llmseg_app.plots import score_plot

if TYPE_CHECKING:
    from leaderboard import Leaderboard

logger = logging.getLogger(__name__)

COLUMN_GROUPS = {
    "95% CIs": lambda column: column.endswith(" 95% CI"),
    "per-tag gIoU": lambda column: column.startswith("gIoU ("),
    "per-tag cIoU": lambda column: column.startswith("cIoU ("),
    "details (n, note, id)": lambda column: column in ("n", "note", "id"),
}
DEFAULT_GROUPS = ["95% CIs", "per-tag gIoU"]


# Escapes that change nothing inside an inline link text; gradio's table filter matches the raw cell
# text, so "my\\-model" would hide from a search for "my-model".
_HARMLESS_ESCAPES = re.compile(r"\\([-.+#!(){}|~])")


def searchable(markdown: str) -> str:
    """``markdown`` without the backslash escapes that inline markdown does not need."""
    return _HARMLESS_ESCAPES.sub(r"\1", markdown)


def display_table(frame: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """The table as shown: baselines labelled, each CI as one "low–high" column, unchosen groups hidden.

    Columns in no group always stay; the CSV keeps every column, with numeric CI bounds.
    """
    frame = frame.copy()
    frame["model"] = [searchable(model) for model in frame["model"]]
    if "baseline" in frame.columns:  # baselines take no rank: say what they are in its place
        frame["rank"] = [
            "baseline" if baseline else str(rank) if pd.notna(rank) else ""
            for rank, baseline in zip(frame["rank"], frame["baseline"], strict=True)
        ]
        frame = frame.drop(columns=["baseline"])
    for metric in ("gIoU", "cIoU"):
        low, high = f"{metric} CI low", f"{metric} CI high"
        if low in frame.columns and high in frame.columns:
            intervals = [
                f"{lo:.1f}–{hi:.1f}" if pd.notna(lo) and pd.notna(hi) else ""
                for lo, hi in zip(frame[low], frame[high], strict=True)
            ]
            frame.insert(frame.columns.get_loc(low), f"{metric} 95% CI", intervals)
            frame = frame.drop(columns=[low, high])
    hidden = [
        column
        for column in frame.columns
        if any(test(column) for name, test in COLUMN_GROUPS.items() if name not in groups)
    ]
    return frame.drop(columns=hidden)


def datatypes(frame: pd.DataFrame) -> list[str]:
    """Gradio column types: the model column is markdown (it carries links), numbers sort as numbers."""
    return [
        "markdown" if column == "model" else "number" if pd.api.types.is_numeric_dtype(frame[column]) else "str"
        for column in frame.columns
    ]


class LeaderboardTab:
    """Builds the tab and serves the ``/leaderboard`` endpoint."""

    def __init__(self, board: Leaderboard, *, cache_dir: Path, split_label: str) -> None:
        self.board = board
        self.cache_dir = cache_dir
        self.split_label = split_label

    def leaderboard(self, show_all: bool = False) -> list[dict[str, Any]]:
        """The ranked table as records (the ``/leaderboard`` endpoint): plain model names, links apart.

        show_all: every submission instead of each submitter's best per model.
        """
        path = self._write_csv(show_all)
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")

    def _write_csv(self, show_all: bool) -> Path:
        """The CSV export (plain model names, links apart), written atomically under a fixed name."""
        path = self.cache_dir / ("leaderboard-all.csv" if show_all else "leaderboard.csv")
        self._write_atomically(path, lambda partial: self.board.to_csv(partial, show_all=show_all))
        return path

    def refresh(self, show_all: bool, groups: list[str]) -> tuple[Any, ...]:
        """Table, its CSV file, the plot and a status line; an error becomes the status line."""
        try:
            frame = display_table(self.board.table(show_all=show_all), groups)
            csv_path = self._write_csv(show_all)
            figure = score_plot(self.board.plot_data())
        except Exception as error:  # any failure here must not take the page down
            logger.exception("leaderboard refresh failed")
            message = f"**Could not build the leaderboard:** {type(error).__name__}: {error}"
            return gr.skip(), gr.skip(), gr.skip(), message
        table = gr.Dataframe(value=frame, datatype=datatypes(frame))
        return table, str(csv_path), figure, ""

    def _write_atomically(self, path: Path, write: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.csv")
        write(partial)
        partial.replace(path)

    def render(self, blocks: gr.Blocks) -> gr.Dataframe:
        """Lay out the tab; returns the table so other tabs can trigger ``refresh`` on it."""
        gr.Markdown(
            f"Submissions scored on the held-out **{self.split_label}** split. Rank by gIoU, then cIoU; "
            "baselines, computed here on the same split, sit at their score without a rank."
        )
        with gr.Row():
            show_all = gr.Checkbox(
                label="Show every submission (not only each model's best)", value=False, scale=1, min_width=260
            )
            groups = gr.CheckboxGroup(
                list(COLUMN_GROUPS),
                value=DEFAULT_GROUPS,
                label="Columns",
                scale=2,
                min_width=320,
                elem_id="leaderboard-columns",
            )
        status = gr.Markdown()
        table = gr.Dataframe(
            interactive=False,
            show_search="filter",
            pinned_columns=2,
            wrap=False,
            max_height=520,
            buttons=["copy", "fullscreen"],
            elem_id="leaderboard-table",
        )
        with gr.Row():
            download = gr.DownloadButton("Download CSV", variant="secondary", size="sm", scale=0, min_width=160)
            refresh = gr.Button("Refresh", size="sm", scale=0, min_width=120)
        plot = gr.Plot(label="gIoU vs cIoU (95% intervals)", elem_id="leaderboard-plot")
        self.outputs = [table, download, plot, status]
        self.inputs = [show_all, groups]
        for trigger in (show_all.change, groups.change, refresh.click, blocks.load):
            trigger(self.refresh, inputs=self.inputs, outputs=self.outputs, api_visibility="private")
        self._render_reported()
        gr.api(self.leaderboard, api_name="leaderboard")
        return table

    def _render_reported(self) -> None:
        gr.Markdown(
            "### Reported ReasonSeg results\n"
            "Published numbers (gIoU / cIoU, %) from the papers, **reported, not verified here**, on "
            "ReasonSeg rather than this leaderboard's split; protocols differ between papers."
        )
        try:
            reported = self.board.reported_table()
            path = self.cache_dir / "reported-results.csv"
            self._write_atomically(path, self.board.reported_to_csv)
        except Exception as error:  # the main table must survive a broken side table
            logger.exception("reported results unavailable")
            gr.Markdown(f"**Could not load the reported results:** {type(error).__name__}: {error}")
            return
        gr.Dataframe(reported, interactive=False, show_search="search", wrap=True, max_height=420)
        gr.DownloadButton("Download reported results (CSV)", value=str(path), size="sm", variant="secondary")
