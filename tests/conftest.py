"""Shared test fixtures: no Hub access, a throwaway ``datasets`` cache, small split folders."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

# Tests never reach the Hub; a dataset id that is not a folder must fail fast, not time out.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _throwaway_datasets_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``load_dataset`` caches every folder it reads; keep that out of the user's cache."""
    import datasets

    datasets.config.HF_DATASETS_CACHE = str(tmp_path_factory.mktemp("datasets-cache"))


@pytest.fixture(autouse=True, scope="session")
def _throwaway_ground_truth_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``python -m eval`` caches each split's ground truth; keep that out of the user's cache (subprocesses too)."""
    os.environ["LLMSEG_EVAL_CACHE"] = str(tmp_path_factory.mktemp("ground-truth-cache"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module's tests: their models are tiny, and the machine's cores are
    shared (a module opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SplitRow = tuple[str, np.ndarray, np.ndarray | None, Sequence[str]]


@pytest.fixture
def write_split(tmp_path: Path) -> Callable[..., Path]:
    """Write ``{split: [(id, mask, ignore or None, tags), ...]}`` as a dataset folder; return it.

    Images are black RGB at each mask's size. Extra keyword arguments go to ``write_dataset``
    (e.g. ``holdout=..., holdout_dir=...``).
    """
    from llmseg.data.writer import Sample, write_dataset

    def write(splits: dict[str, list[SplitRow]], name: str = "data", **kwargs) -> Path:
        out = tmp_path / name
        samples = {
            split: [
                Sample(
                    id=sample_id,
                    image=np.zeros((*mask.shape, 3), np.uint8),
                    image_id=sample_id,
                    query=f"where is {sample_id}?",
                    answer="",
                    mask=mask,
                    ignore=ignore,
                    source="test",
                    tags=list(tags),
                )
                for sample_id, mask, ignore, tags in rows
            ]
            for split, rows in splits.items()
        }
        write_dataset(out, samples, title="test data", description="Written by a test.", **kwargs)
        return out

    return write
