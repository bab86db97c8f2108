"""The Demo tab: an image and a question in; the selected mask, the answer and why it was chosen out.

The ``/segment`` API endpoint is this tab's button, so the API and the page always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from eval import rle
from llmseg_app.examples import Example
from llmseg_app.model_service import ModelService, ModelStatus, ModelUnavailable, on_gpu_when_available
from llmseg_app.overlays import REJECTED_COLOR, SELECTED_COLOR, proposal_overlay

if TYPE_CHECKING:
    from llmseg.pipeline import SegmentationResult

ANSWER_LABEL = "answer"
# Gradio finds the progress tracker by its default value; a default is one shared object anyway.
PROGRESS = gr.Progress()
PROPOSAL_COLUMNS = ["proposal", "selected", "IoP", "similarity", "area %"]

PRESET_NOTES = {
    "shapes": (
        "This demo runs the embedded **`shapes`** model: a tiny LLM-Seg trained on this project's synthetic "
        "world of coloured shapes. It knows only that world, so ask about shapes, colours, sizes and "
        "positions in images like the examples. To run the authors' LLM-Seg (SAM ViT-H + LLaVA-7B) on "
        "photographs, convert their released weights and launch `python app.py --preset llmseg-official` "
        "on a GPU machine (see the README, *Running the released LLM-Seg weights*)."
    ),
    "tiny": "This demo runs the **`tiny`** preset: random weights, for development only; its masks are arbitrary.",
}


def model_banner(status: ModelStatus) -> str:
    """Markdown for the top of the tab: which model, what it knows, and whether it is usable."""
    note = PRESET_NOTES.get(status.preset, f"This demo runs the model **`{status.preset}`**.")
    if status.state == "ready":
        line = f"Model loaded in {status.load_seconds:.1f} s." if status.load_seconds is not None else "Model loaded."
    elif status.state == "failed":
        line = f"**The model could not be loaded**, so the demo is unavailable: {status.message}"
    elif status.state == "loading":
        line = "The model is loading; the first answer waits for it."
    else:
        line = "The model loads on the first question."
    return f"{note}\n\n{line}"


@dataclass(frozen=True)
class SegmentOutputs:
    """Everything one question produces, in the order of the tab's output components."""

    annotated: tuple[np.ndarray, list[tuple[np.ndarray, str]]]
    answer: str
    proposals: pd.DataFrame
    gallery: list[tuple[np.ndarray, str]]
    timings: str
    details: dict[str, Any]

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.annotated, self.answer, self.proposals, self.gallery, self.timings, self.details)


def format_result(image: np.ndarray, result: SegmentationResult, proposals_shown: int) -> SegmentOutputs:
    """Turn a pipeline result into the tab's outputs; proposals are ranked by predicted IoP."""
    iop = np.asarray(result.iop, dtype=np.float64)
    similarity = np.asarray(result.similarity, dtype=np.float64)
    selected = np.asarray(result.selected, dtype=bool)
    masks = result.proposals.masks
    order = np.lexsort((-similarity, -iop))  # IoP first, similarity breaks ties
    table = pd.DataFrame(
        {
            "proposal": np.arange(1, len(order) + 1),
            "selected": ["yes" if selected[k] else "" for k in order],
            "IoP": iop[order].round(3),
            "similarity": similarity[order].round(3),
            "area %": [round(100.0 * float(masks[k].mean()), 1) for k in order],
        },
        columns=PROPOSAL_COLUMNS,
    )
    working = _resized(image, masks.shape[1:]) if len(masks) else image  # proposals live at the working size
    gallery = [
        (
            proposal_overlay(working, masks[k], SELECTED_COLOR if selected[k] else REJECTED_COLOR),
            f"#{rank} IoP {iop[k]:.2f} · sim {similarity[k]:.2f}{' · selected' if selected[k] else ''}",
        )
        for rank, k in enumerate(order[:proposals_shown], start=1)
    ]
    mask = np.asarray(result.mask, dtype=bool)
    annotations = [(mask.astype(np.float32), ANSWER_LABEL)] if mask.any() else []
    answer = text_answer(result.answer, int(selected.sum()), bool(mask.any()))
    timings = "**Timings** · " + " · ".join(
        f"{stage.replace('_', ' ')} {seconds * 1000:.0f} ms" for stage, seconds in result.timings.items()
    )
    if result.cached:
        timings += " · image work reused from the cache"
    details = {
        "mask": rle.encode(mask),
        "mask_area": int(mask.sum()),
        "selected": [int(k) for k in np.flatnonzero(selected)],
        "timings": {stage: round(float(seconds), 4) for stage, seconds in result.timings.items()},
        "cached": bool(result.cached),
    }
    return SegmentOutputs((image, annotations), answer, table, gallery, timings, details)


def text_answer(generated: str | None, selected: int, found: bool) -> str:
    """The model's reply when it says something; otherwise what was selected, marked as such.

    Small models (``tiny``, a briefly trained ``shapes``) can reply with punctuation only, which
    would read as a broken page.
    """
    if generated and any(character.isalnum() for character in generated):
        return generated.strip()
    summary = f"{selected} region{'s' if selected != 1 else ''} selected." if found else "Nothing in the image matches."
    return f"(no text answer from the model) {summary}" if generated is not None else summary


def _resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at ``size`` (H, W), bilinear; unchanged when it already has that size."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


@on_gpu_when_available
def _run_model(service: ModelService, image: np.ndarray, question: str) -> SegmentationResult:
    return service.segmenter().segment(image, question, answer=True)


class DemoTab:
    """Builds the tab inside an open ``gr.Blocks`` and answers its events."""

    def __init__(
        self, service: ModelService, examples: list[Example], proposals_shown: int, *, concurrency_limit: int = 1
    ) -> None:
        self.service = service
        self.examples = examples
        self.proposals_shown = proposals_shown
        self.concurrency_limit = concurrency_limit

    def segment(self, image: np.ndarray | None, question: str, progress: gr.Progress = PROGRESS) -> tuple[Any, ...]:
        """Answer one question about one image (the ``/segment`` endpoint)."""
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        question = (question or "").strip()
        if not question:
            raise gr.Error("Type a question about the image first.")
        if self.service.status().state != "ready":
            progress(0.1, desc="Loading the model (once)")
        try:
            progress(0.5, desc="Segmenting")
            result = _run_model(self.service, image, question)
        except ModelUnavailable as error:
            raise gr.Error(f"The model could not be loaded: {error}") from None
        except ValueError as error:
            raise gr.Error(str(error)) from None
        return format_result(image, result, self.proposals_shown).as_tuple()

    def banner(self) -> str:
        return model_banner(self.service.status())

    def render(self, blocks: gr.Blocks) -> None:
        banner = gr.Markdown(model_banner(self.service.status()), elem_id="model-banner")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                image = gr.Image(
                    label="Image", type="numpy", image_mode="RGB", sources=["upload", "clipboard"], height=360
                )
                question = gr.Textbox(
                    label="Question",
                    placeholder="e.g. the shape that could roll",
                    lines=1,
                    max_lines=3,
                    elem_id="question",
                )
                ask = gr.Button("Segment", variant="primary", elem_id="segment-button")
            with gr.Column(scale=1, min_width=300):
                annotated = gr.AnnotatedImage(
                    label="Selected mask",
                    color_map={ANSWER_LABEL: "#ff4040"},
                    height=360,
                    format="png",  # the main result stays lossless, and PNG encodes faster than WebP
                    elem_id="segment-output",
                )
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
                timings = gr.Markdown(elem_id="timings")
        if self.examples:
            gr.Examples(
                examples=[[str(example.image_path), example.query] for example in self.examples],
                inputs=[image, question],
                label="Examples from the shapes-mini validation split: pick one, then press Segment",
                examples_per_page=len(self.examples),
            )
        with gr.Accordion("Why this mask: the top proposals", open=True):
            gallery = gr.Gallery(
                label="Top proposals by predicted IoP (red = selected)",
                columns=6,
                height="auto",
                format="jpeg",  # six thumbnails: JPEG encodes ~30x faster than the default WebP
                object_fit="contain",
                elem_id="proposal-gallery",
            )
            proposals = gr.Dataframe(label="All proposals", headers=PROPOSAL_COLUMNS, interactive=False, max_height=300)
        with gr.Accordion("Raw result (JSON: mask as COCO RLE, timings)", open=False):
            details = gr.JSON(label="Result")
        gr.on(
            triggers=[ask.click, question.submit],
            fn=self.segment,
            inputs=[image, question],
            outputs=[annotated, answer, proposals, gallery, timings, details],
            api_name="segment",
            concurrency_limit=self.concurrency_limit,
            api_description="Segment what a question asks for in an image; returns the annotated image, "
            "the answer, the proposal scores, overlays, timings and the mask as COCO RLE.",
        ).then(self.banner, outputs=banner, api_visibility="private")
        blocks.load(self.banner, outputs=banner, api_name="model_status")
