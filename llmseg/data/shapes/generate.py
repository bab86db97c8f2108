"""Generate `shapes` samples and splits, and the ``make-shapes`` sub-command that writes them.

Every sample is a pure function of (seed, split, index): its random stream is seeded from those
three numbers alone. So splits are identical byte for byte whatever the number of worker
processes, and any sample (with its scene and instance masks, which the dataset does not store)
can be rebuilt later, e.g. to score baselines that need instance masks.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llmseg.data.shapes.questions import CATEGORIES, AnswerSize, Question, write_question
from llmseg.data.shapes.render import render
from llmseg.data.shapes.scene import PALETTE, SHAPE_KINDS, Scene, sample_scene
from llmseg.data.writer import Sample, png_bytes, write_dataset

SPLITS = ("train", "validation", "test")
SOURCE = "shapes"
# Share of questions by answer size; "unique" questions always have a target.
ANSWER_SIZES: dict[AnswerSize, float] = {"one": 0.64, "many": 0.22, "none": 0.14}


@dataclass(frozen=True)
class GeneratedSample:
    """A sample with what made it: the ``scene`` (instance masks included) and the ``question``."""

    sample: Sample
    scene: Scene
    question: Question


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one sample, independent of every other sample."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return np.random.default_rng([seed, SPLITS.index(split), index])


def generate_sample(seed: int, split: str, index: int) -> GeneratedSample:
    """Draw a scene and a question of a randomly chosen category and answer size; draw a new
    scene whenever the scene offers no question that is certain and of that size."""
    rng = sample_rng(seed, split, index)
    category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    sizes = list(ANSWER_SIZES)
    size: AnswerSize = sizes[int(rng.choice(len(sizes), p=list(ANSWER_SIZES.values())))]
    if category == "unique" and size == "none":
        size = "one"
    while True:
        scene = sample_scene(rng)
        question = write_question(scene, category, size, rng)
        if question is not None:
            break
    image = render(scene)
    mask = np.zeros((scene.height, scene.width), bool)
    for target in question.targets:
        mask |= scene.masks[target]
    name = f"{SOURCE}-{split}-{index:06d}"
    sample = Sample(
        id=name,
        image=png_bytes(image, mode="RGB"),
        image_id=name,
        query=question.text,
        answer=question.answer,
        mask=mask,
        source=SOURCE,
        tags=list(question.tags),
        height=scene.height,
        width=scene.width,
    )
    return GeneratedSample(sample, scene, question)


def _sample_only(seed: int, split: str, index: int) -> Sample:
    return generate_sample(seed, split, index).sample


def generate_split(seed: int, split: str, count: int, *, workers: int = 1) -> Iterator[Sample]:
    """Yield ``count`` samples of a split in order, computed by ``workers`` processes."""
    make = partial(_sample_only, seed, split)
    progress = partial(tqdm, total=count, desc=f"shapes {split}", unit="sample", leave=False)
    if workers <= 1:
        yield from progress(map(make, range(count)))
        return
    with get_context("spawn").Pool(workers) as pool:
        yield from progress(pool.imap(make, range(count), chunksize=16))


# What each tag means, with an example question, for dataset cards and the README.
TAG_DEFINITIONS: dict[str, tuple[str, str]] = {
    "attribute": ("a colour and/or a shape kind", "Segment the green star."),
    "implicit": ("world knowledge about shapes or colours", "Find the star coloured like a ripe banana."),
    "relation": (
        "a position relative to other objects (left of, right of, above, below, nearest to, between)",
        "Find the circle to the left of the red heart.",
    ),
    "comparative": (
        "a superlative or a comparison (largest, smallest, leftmost, highest, most or fewest corners, "
        "bigger or smaller than)",
        "Segment the largest blue object.",
    ),
    "unique": (
        'what occurs once ("the only ...", "whose colour no other ... has")',
        "Find the star whose colour no other star has.",
    ),
    "negation": ("excluding a colour, a kind or an object", "Show me the triangle that is not red."),
    "multi-target": ("several objects; the mask is their union", "Segment all the red objects."),
    "no-target": (
        "nothing: the thing asked for is absent, the mask is empty and the answer says so",
        "Find the purple ring.",
    ),
}


def tag_table() -> str:
    """The tag definitions as a Markdown table."""
    lines = ["| tag | the question needs | example |", "|---|---|---|"]
    lines += [f'| `{tag}` | {meaning} | "{example}" |' for tag, (meaning, example) in TAG_DEFINITIONS.items()]
    return "\n".join(lines)


def describe(command: str, seed: int, counts: dict[str, int]) -> str:
    """The dataset card's body: what the benchmark is, how it was made, what its tags mean."""
    split_counts = ", ".join(f"{split} {count}" for split, count in counts.items())
    return f"""\
A procedurally generated reasoning-segmentation benchmark (the `shapes` world of the llmseg
project). Each image (256 to 384 pixels a side, a textured background) holds 2 to 8 flat-coloured
shapes ({", ".join(SHAPE_KINDS)}) in {len(PALETTE)} colours ({", ".join(PALETTE)}), with some
occlusion between different colours. Each question is written from the scene graph by rules and
has exactly one correct answer set in its scene (checked while generating: borderline relations,
near ties and ambiguous references are re-drawn); the mask is the union of the visible masks of
the objects the answer names. Samples: {split_counts}.

Generated with (seed {seed}):

```bash
{command}
```

Each sample carries one category tag (the first six below), plus `multi-target` or
`no-target` when that applies:

{tag_table()}
"""


def make_shapes(
    out: str | Path,
    *,
    train: int,
    validation: int,
    test: int,
    seed: int,
    holdout_dir: str | Path | None = None,
    workers: int = 1,
    command: str | None = None,
) -> dict[str, int]:
    """Write the requested splits to ``out`` (the test split's ground truth to ``holdout_dir``
    when given); return rows per split."""
    counts = {"train": train, "validation": validation, "test": test}
    if any(count < 0 for count in counts.values()):
        raise ValueError("sample counts must be zero or more")
    if seed < 0:
        raise ValueError("--seed must be zero or more")
    counts = {split: count for split, count in counts.items() if count > 0}
    if not counts:
        raise ValueError("ask for at least one sample with --train, --validation or --test")
    if holdout_dir is not None and "test" not in counts:
        raise ValueError("--holdout-dir keeps the test split's ground truth: also ask for --test N")
    if holdout_dir is not None and Path(holdout_dir).resolve() == Path(out).resolve():
        raise ValueError("--holdout-dir must differ from --out, or the ground truth would be public")
    if command is None:
        command = _command_line(out, counts, seed, holdout_dir)
    splits = {split: generate_split(seed, split, count, workers=workers) for split, count in counts.items()}
    return write_dataset(
        out,
        splits,
        title=f"shapes: {Path(out).name}",
        description=describe(command, seed, counts),
        holdout="test" if holdout_dir is not None else None,
        holdout_dir=holdout_dir,
    )


def _command_line(out: str | Path, counts: dict[str, int], seed: int, holdout_dir: str | Path | None) -> str:
    words = ["python", "-m", "llmseg.data", "make-shapes", "--out", str(out)]
    for split, count in counts.items():
        words += [f"--{split}", str(count)]
    words += ["--seed", str(seed)]
    if holdout_dir is not None:
        words += ["--holdout-dir", str(holdout_dir)]
    return shlex.join(words)


def _run(args: argparse.Namespace) -> int:
    counts = make_shapes(
        args.out,
        train=args.train,
        validation=args.validation,
        test=args.test,
        seed=args.seed,
        holdout_dir=args.holdout_dir,
        workers=args.workers,
    )
    print(", ".join(f"{split}: {count} samples" for split, count in counts.items()) + f" written to {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``make-shapes`` to ``python -m llmseg.data``."""
    parser = subparsers.add_parser(
        "make-shapes",
        help="generate the synthetic `shapes` reasoning-segmentation benchmark",
        description="Generate the `shapes` benchmark: same seed, same bytes.",
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    parser.add_argument("--train", type=int, default=0, metavar="N", help="training samples")
    parser.add_argument("--validation", type=int, default=0, metavar="N", help="validation samples")
    parser.add_argument("--test", type=int, default=0, metavar="N", help="test samples")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument(
        "--holdout-dir",
        type=Path,
        metavar="DIR",
        help="keep the test split's ground truth here; --out gets its public copy without masks",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        metavar="N",
        help="worker processes (the output does not depend on it)",
    )
    parser.set_defaults(run=_run)
