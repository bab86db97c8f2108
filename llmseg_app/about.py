"""The About tab: what LLM-Seg is, the benchmark, the submission format and how to evaluate offline.

The downloadable example file is built from the public copy of the test split (ids and image
sizes only, no ground truth): every mask is a centred box, so it is a valid submission that shows
the format without leaking or approximating any answer.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import gradio as gr
import numpy as np

from eval import rle

logger = logging.getLogger(__name__)

CITATION = """@article{wang2024llmseg,
  title   = {LLM-Seg: Bridging Image Segmentation and Large Language Model Reasoning},
  author  = {Wang, Junchi and Ke, Lei},
  journal = {arXiv preprint arXiv:2404.08767},
  year    = {2024}
}"""

INTRO = """
## LLM-Seg in one paragraph
**Reasoning segmentation** asks for the mask of whatever a free-form question refers to, e.g.
*"the object you would use to cut bread"*. **LLM-Seg** (Wang & Ke, 2024) splits the job in two:
SAM proposes candidate masks for everything in the image, and a LLaVA model reads the image and the
question and emits a `<SEG>` token whose hidden state a small selection module compares with each
proposal's DINOv2 region features. Two heads score every proposal, its predicted
**IoP** (intersection over proposal: how much of it lies inside the answer) and its **similarity**
to the question, and the proposals that pass the selection rule are merged into the answer mask.
The Demo tab shows those scores for the top proposals.

## The benchmark
With its embedded data, the leaderboard scores submissions on the held-out **test** split of
`shapes-mini`, the project's synthetic reasoning benchmark: images of coloured shapes with
questions written from each scene graph. Tags group the questions by the reasoning they need:
`attribute` (colour and shape), `implicit` (world knowledge: *something that could roll*),
`relation` (left of, above, nearest), `comparative` (largest, most corners), `unique` (*the only
blue object*), `negation`, `multi-target` (the mask is the union of several objects) and
`no-target` (nothing matches: the correct mask is empty). Scores follow the ReasonSeg conventions:
**gIoU** is the mean per-question IoU (an empty prediction for an empty answer scores 1), **cIoU**
the cumulative intersection over the cumulative union, with 95% bootstrap confidence intervals.
"""

FORMAT = """
## Submission format
A JSON Lines file with one object per test question: its `id` and its predicted mask as COCO
run-length encoding at the image's original size (`counts` as a compressed string, or as a list of
ints for uncompressed RLE). Every test id must appear exactly once.

```json
{"id": "<sample id>", "mask": {"size": [height, width], "counts": "<COCO compressed RLE>"}}
```

In Python, `eval.rle.encode(mask)` turns an `HxW` bool array into that dict (it wraps
`pycocotools.mask.encode`).
"""

OFFLINE = """
## Evaluate offline
The leaderboard and the command line share one evaluator. Predict the public validation split,
which ships with its masks, and score it; then predict the test split and submit that file:

```bash
.venv/bin/python -m llmseg predict --preset shapes --data data/shapes-mini --split validation --out val.jsonl
.venv/bin/python -m eval val.jsonl --data data/shapes-mini --split validation          # add --json for a JSON report
.venv/bin/python -m llmseg predict --preset shapes --data data/shapes-mini --split test --out test.jsonl
```
"""


PER_SAMPLE = """
## Comparing submissions, and who sees per-sample scores
The Leaderboard tab compares any two rows of a benchmark (also `python -m leaderboard compare A B`).
Both are scored on the same questions, so the test is paired: the 95% interval of the gIoU and cIoU
difference comes from a bootstrap that resamples the same questions for both, and the two-sided
p-value from a sign-flip permutation test (swap the two submissions' results on random questions and
see how often the difference is as large). Only these aggregates are shown, overall and per tag.

The leaderboard keeps every submission's per-sample scores, and gives them to **their own submitter
only** (on this Space your Hugging Face login decides; locally `python -m leaderboard per-sample`).
Not to anyone else, and not at all on a benchmark whose test split is hidden (`private_per_sample`,
the default for LLM-Seg40K's test split): **per-sample scores over many submissions would leak the
ground truth.** With the IoU of each question for a few chosen prediction files (a mask, the same mask
minus one region, ...), anyone could work out each hidden answer mask, question by question, and then
submit it. Aggregates over hundreds of questions give that away far more slowly, and the daily limit
on submissions keeps it slow.
"""


def write_example_predictions(data: str, split: str, path: Path) -> Path:
    """Write a valid predictions file for ``split`` of the public ``data``: a centred box per question.

    Reads only ``id``, ``height`` and ``width``, so no ground truth is touched.
    """
    from eval.contract import load_split

    dataset = load_split(data, split, require_ground_truth=False).select_columns(["id", "height", "width"])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    with partial.open("w", encoding="utf-8") as out:
        for row in dataset:
            height, width = int(row["height"]), int(row["width"])
            mask = np.zeros((height, width), dtype=bool)
            mask[height // 4 : height - height // 4, width // 4 : width - width // 4] = True
            out.write(json.dumps({"id": row["id"], "mask": rle.encode(mask)}) + "\n")
    partial.replace(path)
    return path


def tag_counts(data: str, split: str) -> dict[str, int]:
    """How many questions of the public split carry each tag (from the public ``tags`` column)."""
    from eval.contract import load_split

    tags = load_split(data, split, require_ground_truth=False)["tags"]
    return dict(Counter(tag for row in tags for tag in row).most_common())


def render_about(public_data: str, split: str, cache_dir: Path) -> None:
    """Lay out the tab; the example file and tag counts are skipped (logged) if the data is missing."""
    gr.Markdown(INTRO)
    try:
        counts = tag_counts(public_data, split)
        example = write_example_predictions(public_data, split, cache_dir / f"example-predictions-{split}.jsonl")
    except (ValueError, OSError) as error:
        logger.warning("About tab without tag counts and example file: %s", error)
        counts, example = {}, None
    if counts:
        listed = " · ".join(f"`{tag}` {count}" for tag, count in counts.items())
        gr.Markdown(f"Questions per tag in the {split} split: {listed}.")
    gr.Markdown(FORMAT)
    if example is not None:
        gr.DownloadButton(
            f"Download an example file ({split} split, centred boxes)", value=str(example), elem_id="example-download"
        )
    gr.Markdown(OFFLINE)
    gr.Markdown(PER_SAMPLE, elem_id="about-per-sample")
    gr.Markdown("## Citation")
    gr.Code(CITATION, language=None, label="BibTeX", interactive=False)
