"""A 7B-sized synthetic release checkpoint through ``convert-official`` and ``segment()`` on a GPU.

Draws a checkpoint with the release's key names and full sizes (LLaMA-7B with vocab 32004 and
LoRA r=8, CLIP ViT-L/14, DINOv2 ViT-L/14, the selection module; SAM as a few tiny keys, since
the converter drops it; random bf16 values, so the answers are meaningless), converts it in a
subprocess (time, peak RSS), loads the folder with ``LLMSeg.from_pretrained`` on the GPU and
segments one image twice (a new image, then a second question on the cached image). SAM is
replaced by 50 fixed rectangles: its weights are not part of the conversion. Writes
``bench/results/convert_7b_gpu.json`` (or ``--results``); temporary files are deleted.

    python bench/convert_7b_gpu.py [--workdir /tmp] [--frozen-copy]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from convert_memory import filler_tokenizer  # noqa: E402
from test_convert_official import LONG_QUERY, RELEASE_7B, SHORT_QUERY, WORDS, release_module, write_release  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "convert_7b_gpu.json"

# Peak RSS as VmHWM: ru_maxrss would include this (parent) process's peak, carried across fork and exec.
CONVERT = """
import json, time
from llmseg.model.convert_official import convert_official
started = time.perf_counter()
convert_official({repo!r}, base_tokenizer={tokenizer!r}, sam_checkpoint={sam!r}, out={out!r})
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"seconds": time.perf_counter() - started, "peak_rss_bytes": peak}}))
"""


def fixed_rectangles(image: np.ndarray):
    """50 overlapping rectangles standing in for SAM's 50 largest masks."""
    from llmseg.model.proposals import Proposals

    height, width = image.shape[:2]
    rng = np.random.default_rng(0)
    masks = np.zeros((50, height, width), bool)
    for mask in masks:
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        mask[top : top + rng.integers(8, height // 2), left : left + rng.integers(8, width // 2)] = True
    return Proposals(masks=masks, scores=np.ones(50, np.float32))


def load_and_segment(folder: Path, device: str) -> dict[str, object]:
    from llmseg.model import llmseg as llmseg_module
    from llmseg.model.llmseg import LLMSeg
    from llmseg.pipeline import Segmenter

    llmseg_module.build_proposal_generator = lambda config, device="cpu": fixed_rectangles
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model = LLMSeg.from_pretrained(folder, device=device)
    torch.cuda.synchronize(device)
    load_seconds = time.perf_counter() - started
    segmenter = Segmenter(model)
    image = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    runs = []
    for query in (LONG_QUERY, SHORT_QUERY):
        started = time.perf_counter()
        result = segmenter.segment(image, query)
        torch.cuda.synchronize(device)
        runs.append(
            {
                "query": query,
                "seconds": time.perf_counter() - started,
                "timings": result.timings,
                "cached_image": result.cached,
                "iop_finite": bool(np.isfinite(result.iop).all()),
                "similarity_finite": bool(np.isfinite(result.similarity).all()),
                "selected": int(result.selected.sum()),
                "proposals": len(result.iop),
            }
        )
    return {
        "load_seconds": load_seconds,
        "gpu_peak_allocated_bytes": torch.cuda.max_memory_allocated(),
        "segment_runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--frozen-copy", action="store_true", help="also write DeepSpeed's second frozen copy (31 GB)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: this benchmark needs a CUDA GPU")

    result: dict[str, object] = {
        "benchmark": "convert_7b_gpu",
        "device": torch.cuda.get_device_name(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__},
    }
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="convert-7b-") as temp:
        temp_path = Path(temp)
        started = time.perf_counter()
        file = write_release(
            temp_path / "repo", release_module(RELEASE_7B, std=0.02, device="cuda"), frozen_copy=args.frozen_copy
        )
        result["build_seconds"] = time.perf_counter() - started
        result["file_bytes"] = file.stat().st_size
        filler_tokenizer(temp_path / "tokenizer", text=WORDS)
        sam = temp_path / "sam_vit_h_4b8939.pth"
        sam.write_bytes(b"unused: proposals are fixed rectangles")
        out = temp_path / "converted"
        code = CONVERT.format(
            repo=str(temp_path / "repo"), tokenizer=str(temp_path / "tokenizer"), sam=str(sam), out=str(out)
        )
        completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise SystemExit(f"conversion failed:\n{completed.stderr[-4000:]}")
        result["conversion"] = json.loads(completed.stdout.strip().splitlines()[-1])
        result["converted_bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        result.update(load_and_segment(out, "cuda"))
    print(json.dumps(result, indent=2))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
