"""The Submit tab: a benchmark, a predictions file, its metadata and declared protocol in, the
scores and the new rank out.

On a Space the Hugging Face login names the submitter (a typed name could impersonate anyone);
locally a user-name field does. Rejections are returned, not raised, so the page and the
``/submit`` API both show the leaderboard's one-sentence reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from leaderboard import SubmissionRejected
from leaderboard.submission import (
    CHECKPOINT_SELECTIONS,
    DEFAULT_CHECKPOINT_SELECTION,
    DEFAULT_PROTOCOL,
    PROTOCOLS,
)
from leaderboard.table import markdown_model
from llmseg_app.identity import SIGN_IN, current_user

if TYPE_CHECKING:
    from leaderboard import Leaderboard, SubmissionResult


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def result_markdown(result: SubmissionResult) -> str:
    """The success message: rank first (what people look for), then the headline scores."""
    name = markdown_model(result.model_name, None)
    return (
        f"Scored: **{name}** is ranked **#{result.rank}** on **{result.benchmark}** (submission {result.id}).\n\n"
        f"gIoU **{_percent(result.giou)}** · cIoU **{_percent(result.ciou)}** on {result.n} samples. "
        "See the Leaderboard tab for the per-tag columns."
    )


class SubmitTab:
    """Builds the tab and scores submissions through the leaderboard."""

    def __init__(
        self, board: Leaderboard, *, require_login: bool, max_upload_mb: float, concurrency_limit: int = 2
    ) -> None:
        self.board = board
        self.require_login = require_login
        self.max_upload_mb = max_upload_mb
        self.concurrency_limit = concurrency_limit

    def submit(
        self,
        file: str | None,
        model_name: str,
        user: str,
        link: str,
        note: str,
        benchmark: str | None = None,
        protocol: str | None = None,
        trained_on: str | None = None,
        checkpoint_selection: str | None = None,
        params: str | None = None,
        code: str | None = None,
        paper: str | None = None,
        profile: gr.OAuthProfile | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Score one submission (the ``/submit`` endpoint); returns a message and a JSON result.

        benchmark: its name (see ``/benchmarks``); empty means the default one.
        protocol: zero-shot, fine-tuned or other (empty: other).
        checkpoint_selection: validation, last, test or unknown (empty: unknown).
        trained_on, params (e.g. "7B"), code and paper links are optional.
        """
        try:
            identity = self._identity(user, profile)
            if not file:
                raise SubmissionRejected("choose a predictions .jsonl file to upload")
            result = self.board.submit(
                file,
                model_name=model_name,
                user=identity,
                link=link or None,
                note=note or None,
                benchmark=benchmark or None,
                protocol=protocol or None,
                trained_on=trained_on or None,
                checkpoint_selection=checkpoint_selection or None,
                params=params or None,
                code=code or None,
                paper=paper or None,
            )
        except SubmissionRejected as error:
            message = str(error)
            return f"**Not submitted:** {message}", {"status": "rejected", "error": message}
        return result_markdown(result), result.to_dict()

    def _identity(self, user: str, profile: gr.OAuthProfile | None) -> str:
        identity = current_user(user, profile, require_login=self.require_login)
        if identity is None:
            raise SubmissionRejected(SIGN_IN)
        return identity

    def render(self) -> gr.Dependency:
        """Lay out the form; returns the submit event so the app can refresh the table after it.

        ``self.selector`` is the benchmark dropdown, for the app to show that benchmark's table after.
        """
        gr.Markdown(
            "Upload predictions for a benchmark's held-out split (the format is on the About tab). "
            f"Files up to {self.max_upload_mb:g} MB; the daily limit counts per benchmark, and a rejected file "
            "does not count against it."
        )
        names = [benchmark.name for benchmark in self.board.benchmarks]
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                self.selector = gr.Dropdown(  # custom values reach the leaderboard, whose refusal names the choices
                    names,
                    value=names[0],
                    label="Benchmark",
                    interactive=len(names) > 1,
                    allow_custom_value=True,
                    elem_id="submit-benchmark",
                )
                file = gr.File(
                    label="Predictions (.jsonl)",
                    file_types=[".jsonl"],
                    type="filepath",
                    height=150,
                    elem_id="submit-file",
                )
                model_name = gr.Textbox(label="Model name", max_length=100, elem_id="submit-model")
                if self.require_login:
                    gr.LoginButton()
                    user = gr.Textbox(visible=False)
                else:
                    user = gr.Textbox(label="Your name", max_length=100, elem_id="submit-user")
                link = gr.Textbox(label="Link (paper, code or model page; optional)", max_length=500)
                note = gr.Textbox(label="Note (optional)", lines=2, max_length=1000)
            with gr.Column(scale=1, min_width=300):
                gr.Markdown("**Declared protocol** (shown in the table; not verified)")
                protocol = gr.Radio(
                    list(PROTOCOLS),
                    value=DEFAULT_PROTOCOL,
                    label="Protocol",
                    info="zero-shot: never trained on this benchmark's training split",
                    elem_id="submit-protocol",
                )
                trained_on = gr.Textbox(
                    label="Trained on (optional)",
                    placeholder="e.g. ReasonSeg train + LLM-Seg40K train",
                    max_length=300,
                    elem_id="submit-trained-on",
                )
                checkpoint_selection = gr.Radio(
                    list(CHECKPOINT_SELECTIONS),
                    value=DEFAULT_CHECKPOINT_SELECTION,
                    label="Checkpoint chosen on",
                    info="test is allowed, and flagged in the table",
                    elem_id="submit-checkpoint",
                )
                params = gr.Textbox(label="Parameters (optional)", placeholder="e.g. 7B", elem_id="submit-params")
                code = gr.Textbox(label="Code link (optional)", max_length=500, elem_id="submit-code")
                paper = gr.Textbox(label="Paper link (optional)", max_length=500, elem_id="submit-paper")
                button = gr.Button("Submit", variant="primary", elem_id="submit-button")
            with gr.Column(scale=1, min_width=300):
                message = gr.Markdown(elem_id="submit-message")
                with gr.Accordion("Full result (JSON: scores per tag, 95% intervals)", open=False):
                    details = gr.JSON(label="Result")
        return button.click(
            self.submit,
            inputs=[
                file,
                model_name,
                user,
                link,
                note,
                self.selector,
                protocol,
                trained_on,
                checkpoint_selection,
                params,
                code,
                paper,
            ],
            outputs=[message, details],
            api_name="submit",
            concurrency_limit=self.concurrency_limit,
            api_description="Score a predictions file against a benchmark's held-out split and add it to its table.",
        )
