"""Baselines on the held-out `shapes` mini test split, scored by ``eval.evaluate``.

The baselines need each scene's instance masks, which the dataset does not store: the scenes are
rebuilt from the seed the dataset card names (every sample is a pure function of seed, split and
index), and each rebuilt sample is checked against the committed row. Baselines:

- ``empty``: an empty mask (right exactly on `no-target` questions);
- ``full-image``: every pixel;
- ``random-object``: one object of the scene, uniformly at random (seeded);
- ``largest-object``: the object with the most visible pixels;
- ``oracle-best-instance``: the single object whose mask has the best IoU with the ground truth,
  or an empty mask when the ground truth is empty: an upper bound for a selector that picks one
  proposal among exact object masks and may answer "nothing".

Writes each baseline's predictions to ``data/shapes-mini-heldout/baselines/<name>.jsonl`` (the
evaluation format; the leaderboard scores these files itself), the scores to
``bench/results/shapes_baselines.json``, and prints a Markdown table for the README.

    .venv/bin/python bench/shapes_baselines.py
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval import References, evaluate, write_predictions  # noqa: E402
from llmseg.data.shapes import TAGS, generate_sample  # noqa: E402
from llmseg.data.shapes.generate import GeneratedSample  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "data" / "shapes-mini-heldout"
RESULTS = ROOT / "bench" / "results" / "shapes_baselines.json"
SPLIT = "test"

Baseline = Callable[[GeneratedSample, np.random.Generator], np.ndarray]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def empty(item: GeneratedSample, rng: np.random.Generator) -> np.ndarray:
    return np.zeros_like(item.sample.mask)


def full_image(item: GeneratedSample, rng: np.random.Generator) -> np.ndarray:
    return np.ones_like(item.sample.mask)


def random_object(item: GeneratedSample, rng: np.random.Generator) -> np.ndarray:
    return item.scene.masks[int(rng.integers(len(item.scene.masks)))]


def largest_object(item: GeneratedSample, rng: np.random.Generator) -> np.ndarray:
    return item.scene.masks[int(item.scene.masks.sum(axis=(1, 2)).argmax())]


def oracle_best_instance(item: GeneratedSample, rng: np.random.Generator) -> np.ndarray:
    truth = item.sample.mask
    if not truth.any():
        return np.zeros_like(truth)
    return max(item.scene.masks, key=lambda mask: _iou(mask, truth))


BASELINES: dict[str, Baseline] = {
    "empty": empty,
    "full-image": full_image,
    "random-object": random_object,
    "largest-object": largest_object,
    "oracle-best-instance": oracle_best_instance,
}


def seed_from_card(folder: Path) -> int:
    """The seed in the command line the dataset card records."""
    found = re.search(r"--seed (\d+)", (folder / "README.md").read_text())
    if not found:
        raise ValueError(f"{folder / 'README.md'} names no --seed: regenerate the folder with make-shapes")
    return int(found.group(1))


def rebuild(split: datasets.Dataset, seed: int) -> list[GeneratedSample]:
    """Rebuild every sample of the split from the seed, checking each against the committed row."""
    items = []
    for index, (sample_id, query) in enumerate(tqdm(zip(split["id"], split["query"], strict=True), total=len(split))):
        item = generate_sample(seed, SPLIT, index)
        if (item.sample.id, item.sample.query) != (sample_id, query):
            raise ValueError(f"sample {sample_id} does not match its rebuild: regenerate the folder with make-shapes")
        items.append(item)
    return items


def markdown(results: dict[str, dict]) -> str:
    """gIoU in percent, overall and per tag, plus overall cIoU."""
    header = "| baseline | gIoU | cIoU | " + " | ".join(TAGS) + " |"
    lines = [header, "|---" * (len(TAGS) + 3) + "|"]
    for name, report in results.items():
        per_tag = [f"{100 * report['by_tag'][tag]['giou']:.1f}" for tag in TAGS]
        lines.append(
            f"| {name} | {100 * report['giou']:.1f} | {100 * report['ciou']:.1f} | " + " | ".join(per_tag) + " |"
        )
    first = next(iter(results.values()))
    counts = " | ".join(str(first["by_tag"][tag]["n"]) for tag in TAGS)
    lines.append(f"| *samples* | {first['n']} | | {counts} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", type=Path, default=HELDOUT, help="folder with the test split's ground truth")
    args = parser.parse_args(argv)

    # datasets 5.2 keys a local folder's cache by its name, not its content: rebuild it.
    split = datasets.load_dataset(str(args.heldout), split=SPLIT, download_mode="force_redownload")
    references = References.from_split(split)
    items = rebuild(split, seed_from_card(args.heldout))
    out = args.heldout / "baselines"
    out.mkdir(exist_ok=True)
    results = {}
    for name, baseline in BASELINES.items():
        rng = np.random.default_rng(0)
        path = out / f"{name}.jsonl"
        write_predictions(path, ((item.sample.id, baseline(item, rng)) for item in items))
        report = evaluate(path, references)
        results[name] = report.to_dict()
        print(f"\n{name}\n{report.to_table()}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"split": f"{args.heldout.name}/{SPLIT}", "baselines": results}, indent=2) + "\n")
    print(f"\n{markdown(results)}\n\nwrote {RESULTS} and {out}/*.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
