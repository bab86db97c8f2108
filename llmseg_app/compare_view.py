"""The Leaderboard tab's compare view and per-sample download.

Compare: pick two rows (submissions or baselines of the shown benchmark) and see the paired gIoU
and cIoU differences with 95% intervals and p-values, overall and per tag; the ``/compare``
endpoint gives the same as JSON. Download: a submitter's own per-sample IoU as CSV; on a Space
the Hugging Face login decides whose submissions those are, locally a user-name field does.
The statistics and the policy live in ``leaderboard``; this module lays them out.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from leaderboard import Refused
from leaderboard.significance import format_p
from llmseg_app.identity import SIGN_IN, current_user

if TYPE_CHECKING:
    from leaderboard import Leaderboard

INTRO = (
    "Is one model really better than another on this benchmark? Both are scored on the same questions, "
    "so the comparison is paired: the 95% interval of the difference resamples the same questions for "
    "both, and the p-value comes from a sign-flip permutation test (swapping the two submissions' results "
    "on random questions). Small p: the difference is unlikely to be luck of the question sample."
)


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def _interval(bounds: list[float]) -> str:
    return f"[{_points(bounds[0])}, {_points(bounds[1])}]"


def headline(result: dict[str, Any]) -> str:
    """The overall answer in two lines: who against whom, then both differences in points."""
    parts = [
        f"{label} {_points(result[f'{metric}_diff'])} points {_interval(result[f'{metric}_ci95'])}, "
        f"p {format_p(result[f'{metric}_p'])}"
        for metric, label in (("giou", "gIoU"), ("ciou", "cIoU"))
    ]
    return (
        f"**A** {result['a']['label']} − **B** {result['b']['label']} on **{result['benchmark']}** "
        f"({result['n']} questions, {result['n_resamples']} resamples):\n\n" + " · ".join(parts)
    )


def comparison_frame(result: dict[str, Any]) -> pd.DataFrame:
    """One row per subset (overall, then each tag): both scores, the difference, its interval, p."""
    rows = []
    for name, row in [("overall", result), *result["by_tag"].items()]:
        cells: dict[str, Any] = {"subset": name, "n": row["n"]}
        for metric, label in (("giou", "gIoU"), ("ciou", "cIoU")):
            cells[f"{label} A"] = f"{100 * row[f'{metric}_a']:.1f}"
            cells[f"{label} B"] = f"{100 * row[f'{metric}_b']:.1f}"
            cells[f"Δ {label}"] = _points(row[f"{metric}_diff"])
            cells[f"Δ {label} 95% CI"] = _interval(row[f"{metric}_ci95"])
            cells[f"{label} p"] = format_p(row[f"{metric}_p"])
        rows.append(cells)
    return pd.DataFrame(rows)


class CompareView:
    """Builds the compare view and the per-sample download, and serves ``/compare``."""

    def __init__(self, board: Leaderboard, *, cache_dir: Path, require_login: bool) -> None:
        self.board = board
        self.cache_dir = cache_dir
        self.require_login = require_login

    def compare(self, a: str, b: str, benchmark: str | None = None) -> dict[str, Any]:
        """The paired comparison as JSON (the ``/compare`` endpoint): differences A - B, intervals, p-values.

        a, b: submission ids (the table's id column) or "baseline:NAME".
        benchmark: the benchmark's name; empty means the submissions' own (or the default).
        """
        try:
            return self.board.compare(a, b, benchmark=benchmark or None)
        except Refused as error:
            raise gr.Error(str(error)) from None

    def show_comparison(self, a: str | None, b: str | None, benchmark: str | None = None) -> tuple[Any, ...]:
        """The headline, the per-subset table (hidden when there is none) and the JSON."""
        if not a or not b:
            return "Pick two rows to compare.", gr.Dataframe(visible=False), None
        try:
            result = self.board.compare(a, b, benchmark=benchmark or None)
        except Refused as error:
            return f"**Not compared:** {error}", gr.Dataframe(visible=False), None
        return headline(result), gr.Dataframe(value=comparison_frame(result), visible=True), result

    def choices(self, benchmark: str | None = None) -> tuple[Any, Any]:
        """Both pickers' options for ``benchmark``: A defaults to the newest submission, B to the first baseline."""
        options = self.board.comparable(benchmark or None)
        values = [value for _, value in options]
        first = values[0] if values else None
        second = next((value for value in values if value != first and value.startswith("baseline:")), None)
        return gr.Dropdown(choices=options, value=first), gr.Dropdown(choices=options, value=second or first)

    def download(self, submission: str, user: str, profile: gr.OAuthProfile | None = None) -> tuple[Any, str]:
        """One's own submission's per-sample IoU as a CSV file, or the refusal as the message."""
        try:
            who = current_user(user, profile, require_login=self.require_login)
            if who is None:
                raise Refused(SIGN_IN)
            frame = self.board.per_sample(submission, user=who)
        except Refused as error:
            return gr.DownloadButton(visible=False), f"**Not available:** {error}"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="per-sample-", dir=self.cache_dir))  # one folder per request
        path = folder / f"submission-{str(submission).strip().removeprefix('#')}-per-sample.csv"
        frame.to_csv(path, index=False)
        return (
            gr.DownloadButton(value=str(path), visible=True),
            f"Per-sample IoU of submission {str(submission).strip()}: {len(frame)} questions.",
        )

    def render(self, blocks: gr.Blocks, *, benchmark: gr.Dropdown | None, table: gr.Dataframe) -> None:
        """Lay out both sections under the table; the pickers follow the shown benchmark and table."""
        with gr.Accordion("Compare two submissions (paired significance)", open=True, elem_id="compare"):
            gr.Markdown(INTRO)
            with gr.Row():
                a = gr.Dropdown(label="A", scale=1, min_width=220, elem_id="compare-a")
                b = gr.Dropdown(label="B", scale=1, min_width=220, elem_id="compare-b")
            button = gr.Button("Compare", variant="primary", size="sm", elem_id="compare-button")
            message = gr.Markdown(elem_id="compare-message")
            frame = gr.Dataframe(interactive=False, wrap=False, visible=False, elem_id="compare-table")
            with gr.Accordion("Full result (JSON)", open=False):
                details = gr.JSON(label="Comparison")
        with gr.Accordion("Your per-sample results", open=False, elem_id="per-sample"):
            gr.Markdown(
                "Download the per-sample IoU of one of **your own** submissions (id from the table's id column). "
                "Benchmarks with a hidden test split keep them private: see the About tab for why."
            )
            with gr.Row():
                submission = gr.Textbox(label="Submission id", max_length=20, min_width=160, elem_id="per-sample-id")
                if self.require_login:
                    gr.LoginButton()
                    user = gr.Textbox(visible=False)
                else:
                    user = gr.Textbox(label="Your name", max_length=100, min_width=160, elem_id="per-sample-user")
            fetch = gr.Button("Get my per-sample IoU", size="sm", elem_id="per-sample-button")
            status = gr.Markdown(elem_id="per-sample-message")
            file = gr.DownloadButton("Download CSV", visible=False, size="sm", elem_id="per-sample-download")
        selected = [benchmark] if benchmark is not None else []
        refill = {"fn": self.choices, "inputs": selected, "outputs": [a, b], "api_visibility": "private"}
        blocks.load(**refill)
        table.change(**refill)  # a refresh (new submission, other benchmark) may change the rows
        button.click(
            self.show_comparison, inputs=[a, b, *selected], outputs=[message, frame, details], api_visibility="private"
        )
        fetch.click(self.download, inputs=[submission, user], outputs=[file, status], api_visibility="private")
        gr.api(self.compare, api_name="compare")
