"""The Leaderboard tab: per benchmark, the ranked table with column groups, protocol filters,
search and CSV, the plot; then the reported results.

Computing the table belongs to ``leaderboard``; this module only picks columns, styles and plots.
A failing refresh shows its error in the tab and leaves the rest of the page working.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from leaderboard.submission import CHECKPOINT_SELECTIONS, PROTOCOLS
from leaderboard.table import TEST_SELECTION_FLAG, format_params
from llmseg_app.plots import score_plot

if TYPE_CHECKING:
    from leaderboard import Leaderboard
    from leaderboard.benchmarks import Benchmark

logger = logging.getLogger(__name__)

COLUMN_GROUPS = {
    "95% CIs": lambda column: column.endswith(" 95% CI"),
    "per-tag gIoU": lambda column: column.startswith("gIoU ("),
    "per-tag cIoU": lambda column: column.startswith("cIoU ("),
    "training (data, params, code, paper)": lambda column: column in ("trained on", "params", "code", "paper"),
    "details (n, note, id)": lambda column: column in ("n", "note", "id"),
}
DEFAULT_GROUPS = ["95% CIs", "per-tag gIoU", "training (data, params, code, paper)"]
SHOWN_NAMES = {"checkpoint_selection": "checkpoint", "trained_on": "trained on"}
MARKDOWN_COLUMNS = ("model", "code", "paper")
FLAG_LEGEND = (
    f"Protocols are declared by the submitter, not verified. **{TEST_SELECTION_FLAG}**: the checkpoint was "
    "chosen on this test split (allowed, but its score is optimistic)."
)


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
    frame = frame.rename(columns=SHOWN_NAMES)
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
    frame = _declared_after_scores(frame)
    hidden = [
        column
        for column in frame.columns
        if any(test(column) for name, test in COLUMN_GROUPS.items() if name not in groups)
    ]
    return frame.drop(columns=hidden)


def _declared_after_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Protocol and checkpoint right after the overall scores, where a reader compares rows."""
    declared = [column for column in ("protocol", "checkpoint") if column in frame.columns]
    anchor = "cIoU 95% CI" if "cIoU 95% CI" in frame.columns else "cIoU"
    if not declared or anchor not in frame.columns:
        return frame
    rest = [column for column in frame.columns if column not in declared]
    at = rest.index(anchor) + 1
    return frame[rest[:at] + declared + rest[at:]]


def datatypes(frame: pd.DataFrame) -> list[str]:
    """Gradio column types: model, code and paper are markdown (links), numbers sort as numbers."""
    return [
        "markdown"
        if column in MARKDOWN_COLUMNS
        else "number"
        if pd.api.types.is_numeric_dtype(frame[column])
        else "str"
        for column in frame.columns
    ]


def benchmark_intro(benchmark: Benchmark) -> str:
    """The line above a benchmark's table: what it scores (never where its ground truth lives)."""
    described = f" {benchmark.description}" if benchmark.description else ""
    return (
        f"**{benchmark.name}**: submissions scored on its held-out **{benchmark.split}** split.{described} "
        "Rank by gIoU, then cIoU; baselines, computed here on the same split, sit at their score without a rank."
    )


class LeaderboardTab:
    """Builds the tab and serves the ``/leaderboard`` and ``/benchmarks`` endpoints."""

    def __init__(self, board: Leaderboard, *, cache_dir: Path) -> None:
        self.board = board
        self.cache_dir = cache_dir

    def leaderboard(self, show_all: bool = False, benchmark: str | None = None) -> list[dict[str, Any]]:
        """A benchmark's ranked table as records (the ``/leaderboard`` endpoint): plain model names, links apart.

        show_all: every submission instead of each submitter's best per model.
        benchmark: the benchmark's name (see ``/benchmarks``); empty means the default one.
        """
        try:
            chosen = self.board.benchmark(benchmark).name
        except ValueError as error:  # an unknown name: the caller sees the sentence naming the choices
            raise gr.Error(str(error)) from None
        path = self._write_csv(chosen, show_all, None, None)
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")

    def benchmarks(self) -> list[dict[str, Any]]:
        """The benchmarks on this leaderboard, the default first (the ``/benchmarks`` endpoint)."""
        return [
            {
                "name": benchmark.name,
                "split": benchmark.split,
                "description": benchmark.description,
                "private_per_sample": benchmark.private_per_sample,
            }
            for benchmark in self.board.benchmarks
        ]

    def _write_csv(
        self,
        benchmark: str,
        show_all: bool,
        protocols: Sequence[str] | None,
        checkpoint_selections: Sequence[str] | None,
    ) -> Path:
        """The CSV export of one view (plain model names, links apart), written atomically.

        Each view (benchmark, every row or the best, filters) has its own file name, so two
        visitors looking at different views never download each other's table.
        """
        filters = ""
        if protocols is not None or checkpoint_selections is not None:
            key = repr((sorted(protocols or []), sorted(checkpoint_selections or [])))
            filters = "-" + hashlib.sha256(key.encode()).hexdigest()[:10]
        path = self.cache_dir / f"leaderboard-{benchmark}{'-all' if show_all else ''}{filters}.csv"
        self._write_atomically(
            path,
            lambda partial: self.board.to_csv(
                partial,
                show_all=show_all,
                benchmark=benchmark,
                protocols=protocols,
                checkpoint_selections=checkpoint_selections,
            ),
        )
        return path

    def refresh(
        self,
        benchmark: str | None,
        show_all: bool,
        groups: list[str],
        protocols: list[str] | None = None,
        checkpoint_selections: list[str] | None = None,
    ) -> tuple[Any, ...]:
        """Intro, table, its CSV file, the plot and a status line; an error becomes the status line."""
        try:
            chosen = self.board.benchmark(benchmark)
            filters = {"protocols": protocols, "checkpoint_selections": checkpoint_selections}
            frame = display_table(self.board.table(show_all=show_all, benchmark=chosen.name, **filters), groups)
            csv_path = self._write_csv(chosen.name, show_all, protocols, checkpoint_selections)
            figure = score_plot(self.board.plot_data(benchmark=chosen.name, **filters))
        except Exception as error:  # any failure here must not take the page down
            logger.exception("leaderboard refresh failed")
            message = f"**Could not build the leaderboard:** {type(error).__name__}: {error}"
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), message
        table = gr.Dataframe(value=frame, datatype=datatypes(frame))
        return benchmark_intro(chosen), table, str(csv_path), figure, ""

    def show(self, benchmark: str | None, *inputs: Any) -> tuple[Any, ...]:
        """Switch the selector to ``benchmark`` and refresh (after a submission to it)."""
        return (self.board.benchmark(benchmark).name, *self.refresh(benchmark, *inputs))

    def _write_atomically(self, path: Path, write: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.csv")
        write(partial)
        partial.replace(path)

    def render(self, blocks: gr.Blocks) -> gr.Dataframe:
        """Lay out the tab; returns the table so other tabs can trigger ``refresh`` on it."""
        names = [benchmark.name for benchmark in self.board.benchmarks]
        with gr.Row():
            self.selector = gr.Dropdown(
                names,
                value=names[0],
                label="Benchmark",
                interactive=len(names) > 1,
                scale=1,
                min_width=200,
                elem_id="leaderboard-benchmark",
            )
            show_all = gr.Checkbox(
                label="Show every submission (not only each model's best)", value=False, scale=1, min_width=260
            )
        intro = gr.Markdown(benchmark_intro(self.board.benchmarks[0]), elem_id="leaderboard-intro")
        with gr.Row():
            protocols = gr.CheckboxGroup(
                list(PROTOCOLS),
                value=list(PROTOCOLS),
                label="Protocol",
                scale=1,
                min_width=260,
                elem_id="leaderboard-protocol",
            )
            checkpoints = gr.CheckboxGroup(
                list(CHECKPOINT_SELECTIONS),
                value=list(CHECKPOINT_SELECTIONS),
                label="Checkpoint chosen on",
                scale=1,
                min_width=300,
                elem_id="leaderboard-checkpoint",
            )
        groups = gr.CheckboxGroup(
            list(COLUMN_GROUPS), value=DEFAULT_GROUPS, label="Columns", elem_id="leaderboard-columns"
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
        gr.Markdown(FLAG_LEGEND, elem_id="leaderboard-legend")
        with gr.Row():
            download = gr.DownloadButton("Download CSV", variant="secondary", size="sm", scale=0, min_width=160)
            refresh = gr.Button("Refresh", size="sm", scale=0, min_width=120)
        plot = gr.Plot(label="gIoU vs cIoU (95% intervals)", elem_id="leaderboard-plot")
        self.outputs = [intro, table, download, plot, status]
        self.inputs = [self.selector, show_all, groups, protocols, checkpoints]
        # .input, not .change, on the selector: the Submit tab sets it programmatically along with a refresh
        for trigger in (self.selector.input, show_all.change, groups.change, protocols.change, checkpoints.change):
            trigger(self.refresh, inputs=self.inputs, outputs=self.outputs, api_visibility="private")
        for trigger in (refresh.click, blocks.load):
            trigger(self.refresh, inputs=self.inputs, outputs=self.outputs, api_visibility="private")
        gr.api(self.leaderboard, api_name="leaderboard")
        gr.api(self.benchmarks, api_name="benchmarks")
        return table

    def render_reported(self) -> None:
        """The published-results section; the app places it last, after the compare view."""
        gr.Markdown(
            "### Reported ReasonSeg results\n"
            "Published numbers (gIoU / cIoU, %) from the papers, **reported, not verified here**, on "
            "ReasonSeg under each paper's own protocol and scoring; the protocol fields are filled only where "
            "the paper says them."
        )
        try:
            reported = self.board.reported_table()
            reported["params"] = [format_params(value) for value in reported["params"]]
            path = self.cache_dir / "reported-results.csv"
            self._write_atomically(path, self.board.reported_to_csv)
        except Exception as error:  # the main table must survive a broken side table
            logger.exception("reported results unavailable")
            gr.Markdown(f"**Could not load the reported results:** {type(error).__name__}: {error}")
            return
        gr.Dataframe(reported, interactive=False, show_search="search", wrap=True, max_height=420)
        gr.DownloadButton("Download reported results (CSV)", value=str(path), size="sm", variant="secondary")
