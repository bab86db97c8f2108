"""Shared helpers for the leaderboard tests: a tiny held-out split and prediction files for it.

Imported by the other ``test_leaderboard_*`` modules; it holds no tests itself.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from eval.rle import encode
from leaderboard import Leaderboard, LeaderboardSettings
from llmseg.data.writer import Sample, write_dataset

HEIGHT, WIDTH = 24, 32
N_SAMPLES = 8


def make_masks(n: int = N_SAMPLES, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Ground-truth masks: random rectangles, the last sample empty (a "no-target" question)."""
    rng = np.random.default_rng(seed)
    masks = {}
    for i in range(n):
        mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
        if i != n - 1:
            top, left = rng.integers(0, HEIGHT // 2), rng.integers(0, WIDTH // 2)
            mask[top : top + rng.integers(3, HEIGHT // 2), left : left + rng.integers(3, WIDTH // 2)] = True
        masks[f"q{i:03d}"] = mask
    return masks


def write_split(parent: Path, masks: dict[str, np.ndarray], *, name: str | None = None) -> Path:
    """Write ``masks`` as a test split with ground truth into ``parent/name`` (a new folder by default).

    Sample 0 has an ignore region.
    """
    folder = parent / (name or f"split-{uuid.uuid4().hex[:12]}")
    samples = []
    for i, (sample_id, mask) in enumerate(masks.items()):
        ignore = None
        if i == 0:
            ignore = np.zeros_like(mask)
            ignore[:2, :] = True
        tags = ["short" if i % 2 else "long"] + (["no-target"] if not mask.any() else [])
        samples.append(
            Sample(
                id=sample_id,
                image=np.full((HEIGHT, WIDTH, 3), 40 * (i % 6), dtype=np.uint8),
                image_id=f"img{i}",
                query=f"which region is {sample_id}?",
                answer="",
                mask=mask,
                source="leaderboard-tests",
                tags=tags,
                ignore=ignore,
            )
        )
    write_dataset(folder, {"test": samples}, title="leaderboard test split", description="Tiny held-out split.")
    return folder


def predictions_file(path: Path, masks: dict[str, np.ndarray]) -> Path:
    """Write a predictions file (JSON Lines of compressed RLE) for ``masks``."""
    path.write_text("".join(json.dumps({"id": i, "mask": encode(m)}) + "\n" for i, m in masks.items()))
    return path


def shifted(masks: dict[str, np.ndarray], shift: int) -> dict[str, np.ndarray]:
    """Masks moved ``shift`` pixels right: a prediction that is good but not perfect."""
    return {i: np.roll(m, shift, axis=1) for i, m in masks.items()}


@pytest.fixture(scope="session")
def truth() -> dict[str, np.ndarray]:
    return make_masks()


@pytest.fixture(scope="session")
def split_dir(tmp_path_factory: pytest.TempPathFactory, truth: dict[str, np.ndarray]) -> Path:
    """The held-out split plus a baselines folder (empty and oracle predictions)."""
    folder = write_split(tmp_path_factory.mktemp("heldout"), truth)
    baselines = folder / "baselines"
    baselines.mkdir()
    predictions_file(baselines / "empty.jsonl", {i: np.zeros_like(m) for i, m in truth.items()})
    predictions_file(baselines / "oracle.jsonl", truth)
    return folder


@pytest.fixture
def lb_settings(tmp_path: Path, split_dir: Path) -> LeaderboardSettings:
    """Settings for a fresh database on the shared split."""
    return LeaderboardSettings.from_env({}, db_path=tmp_path / "lb" / "leaderboard.sqlite", data=str(split_dir))


@pytest.fixture
def board(lb_settings: LeaderboardSettings) -> Leaderboard:
    return Leaderboard(lb_settings)
