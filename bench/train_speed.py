"""Training speed: samples per second of the `tiny` and `shapes` presets, data time against compute time.

For each preset, on the committed ``shapes-mini`` validation split (its questions stand in for
training questions: only speed is measured here), the script prepares proposals once (timed), then
runs the training step of ``llmseg.train`` (``training_batches``: a DataLoader worker decodes and,
on a CPU, collates ahead; then forward, backward, clipping, AdamW) for ``--warmup`` untimed and
``--steps`` timed steps at the preset's training batch size, timing how long each step waits for
its batch and how long it computes. Two references in the same run, each as a ratio: the same loop
with collation in the main process (the worker only decodes), and the data work per question when
proposals are computed on the fly instead of decoded from the prepared file (what training without
``prepare`` would cost). Then the ``trainable="selector"`` loop: the encoders frozen, every
question encoded once (timed per question), steps on cached batches, as a ratio to the full step;
and reading the encoded questions back from the disk cache a later selector run finds (fingerprint
and load, per question) as a ratio to encoding them again.
Prints the figures and writes ``bench/results/train_speed.json``. On a
shared machine the wall-clock rates depend on the load (recorded); samples per CPU second (the main
process's CPU time plus the worker's decoding and collation) is what an idle machine would give.
One intra-op thread by default: with more, threads that other jobs preempt stall each other.

    .venv/bin/python bench/train_speed.py [--presets tiny shapes] [--steps 5] [--warmup 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.contract import load_split  # noqa: E402
from llmseg.feature_cache import FeatureCache, fingerprint  # noqa: E402
from llmseg.model.llmseg import (  # noqa: E402
    FeatureBatch,
    LLMSeg,
    TrainingBatch,
)
from llmseg.model.presets import get_preset  # noqa: E402
from llmseg.model.proposals import build_proposal_generator  # noqa: E402
from llmseg.prepare import image_array, load_prepared, prepare  # noqa: E402
from llmseg.train import (  # noqa: E402
    TrainingData,
    collate,
    encode_questions,
    loader,
    micro_batch_indices,
    train_config_for,
    training_batches,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = str(ROOT / "data" / "shapes-mini")
SPLIT = "validation"
RESULTS = ROOT / "bench" / "results" / "train_speed.json"


def decode_seconds(data: TrainingData, count: int) -> tuple[float, float]:
    """Mean (wall, CPU) seconds to decode one question (image, masks, RLE proposals) in this process."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for index in range(count):
        data[index]
    return (time.perf_counter() - start) / count, (time.process_time() - cpu_start) / count


def on_the_fly_seconds(preset: str, split, count: int) -> float:
    """Reference: mean seconds per question when the proposal generator runs instead of reading prepared RLE."""
    generator = build_proposal_generator(get_preset(preset).proposals)
    start = time.perf_counter()
    for sample in split.select(range(count)):
        image = image_array(sample["image"])
        generator(image)
        np.asarray(sample["mask"].convert("L"))
    return (time.perf_counter() - start) / count


def timed_steps(
    model: LLMSeg,
    optimizer: torch.optim.Optimizer,
    stream: Iterator[TrainingBatch | FeatureBatch],
    args: argparse.Namespace,
) -> dict[str, float]:
    """Mean seconds per step (``wait`` for the batch, ``compute``, ``step``) and main-process ``cpu`` seconds."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    timings: dict[str, list[float]] = {"wait": [], "compute": [], "step": [], "cpu": []}
    for step in range(args.warmup + args.steps):
        cpu_start, start = time.process_time(), time.perf_counter()
        batch = next(stream)
        ready = time.perf_counter()
        model(batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        done = time.perf_counter()
        if step >= args.warmup:
            timings["wait"].append(ready - start)
            timings["compute"].append(done - ready)
            timings["step"].append(done - start)
            timings["cpu"].append(time.process_time() - cpu_start)
    stream.close()
    return {name: float(np.mean(values)) for name, values in timings.items()}


def main_process_collation(
    model: LLMSeg, data: TrainingData, batches: Iterator[list[int]], workers: int
) -> Iterator[TrainingBatch]:
    """Reference: workers only decode, the main process collates (the loop on an accelerator)."""
    for samples in loader(data, batches, workers):
        yield collate(model, samples)


def bench_preset(preset: str, args: argparse.Namespace, scratch: Path, device: str) -> dict:
    config = get_preset(preset)
    settings = train_config_for(preset)
    batch = args.batch_size or settings.batch_size
    questions = min(args.questions, len(load_split(DATA, SPLIT)))

    start = time.perf_counter()
    prepare(config, DATA, SPLIT, scratch / preset, limit=questions)
    prepare_s = (time.perf_counter() - start) / questions
    split = load_split(DATA, SPLIT).select(range(questions))
    data = TrainingData(split, load_prepared(scratch / preset, SPLIT))

    torch.manual_seed(0)
    model = LLMSeg.from_config(config, device)
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters, lr=settings.learning_rate, betas=(settings.adam_beta1, settings.adam_beta2)
    )
    workers = max(1, settings.data_workers)
    batches = micro_batch_indices(len(data), 0, batch, seed=0)
    loop = timed_steps(model, optimizer, training_batches(model, data, batches, workers), args)
    batches = micro_batch_indices(len(data), 0, batch, seed=0)
    reference = timed_steps(model, optimizer, main_process_collation(model, data, batches, workers), args)

    selector_only = selector_only_steps(model, data, batch, settings.learning_rate, workers, args)

    samples = [data[index] for index in range(batch)]
    start, cpu_start = time.perf_counter(), time.process_time()
    collate(model, samples)
    collate_seconds, collate_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    reference_count = min(questions, args.reference_questions)
    decode, decode_cpu = decode_seconds(data, reference_count)
    on_the_fly = on_the_fly_seconds(preset, split, reference_count)
    # CPU of the main process per step plus the worker's decoding and collation (when it collates).
    worker_cpu = batch * decode_cpu + (collate_cpu if model.device.type == "cpu" else 0.0)
    result = {
        "batch_size": batch,
        "steps_timed": args.steps,
        "samples_per_s": round(batch / loop["step"], 2),
        "samples_per_cpu_s": round(batch / (loop["cpu"] + worker_cpu), 2),
        "seconds_per_step": round(loop["step"], 3),
        "compute_s_per_step": round(loop["compute"], 3),
        "wait_for_data_s_per_step": round(loop["wait"], 4),
        "collate_s_per_batch": round(collate_seconds, 4),
        "decode_s_per_question": round(decode, 4),
        "prepare_s_per_question": round(prepare_s, 4),
        "reference_main_process_collation": {
            "samples_per_s": round(batch / reference["step"], 2),
            "wait_for_data_s_per_step": round(reference["wait"], 4),
            "compute_s_per_step": round(reference["compute"], 3),
        },
        "ratio_loop_over_main_process_collation": round(reference["step"] / loop["step"], 2),
        "reference_on_the_fly_proposals_s_per_question": round(on_the_fly, 4),
        "ratio_on_the_fly_over_prepared_data": round(on_the_fly / decode, 2),
        "trainable_parameters": sum(p.numel() for p in parameters),
        "selector_only": {
            "seconds_per_step": round(selector_only["step"], 4),
            "samples_per_s": round(batch / selector_only["step"], 1),
            "encode_s_per_question": round(selector_only["encode"], 4),
            "cache_kb_per_question": round(selector_only["bytes_per_question"] / 1024, 1),
            "disk_cache_read_s_per_question": round(selector_only["read_back"], 5),
            "trainable_parameters": selector_only["parameters"],
        },
        "ratio_full_step_over_selector_only_step": round(loop["step"] / selector_only["step"], 1),
        "ratio_encode_over_disk_cache_read": round(selector_only["encode"] / selector_only["read_back"], 1),
    }
    print(
        f"{preset} (batch {batch}): {result['samples_per_s']} samples/s, {result['samples_per_cpu_s']} per CPU second; "
        f"{loop['step']:.3f} s/step = compute {loop['compute']:.3f} + waiting for data {loop['wait']:.4f}"
    )
    print(
        f"  collating in the main process instead: {result['reference_main_process_collation']['samples_per_s']} "
        f"samples/s (the loop is {result['ratio_loop_over_main_process_collation']}x faster); one batch collates "
        f"in {collate_seconds:.3f} s"
    )
    print(
        f"  data per question: decoding prepared proposals {decode * 1000:.1f} ms, computing them on the fly "
        f"{on_the_fly * 1000:.1f} ms ({result['ratio_on_the_fly_over_prepared_data']}x); prepare "
        f"{prepare_s * 1000:.1f} ms"
    )
    print(
        f"  selector only (trainable=selector, cached encoder outputs): {selector_only['step']:.4f} s/step, "
        f"{result['ratio_full_step_over_selector_only_step']}x faster; encoding once costs "
        f"{selector_only['encode'] * 1000:.1f} ms per question; reading it back from disk "
        f"{selector_only['read_back'] * 1000:.2f} ms ({result['ratio_encode_over_disk_cache_read']}x less)"
    )
    return result


def selector_only_steps(
    model: LLMSeg, data: TrainingData, batch: int, learning_rate: float, workers: int, args: argparse.Namespace
) -> dict[str, float]:
    """The ``trainable="selector"`` loop: encode every question once (timed per question), then
    steps on cached batches. Freezes ``model``'s encoders, so it runs after the full-model timings."""
    model.freeze_encoders()
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate)
    start = time.perf_counter()
    cache = encode_questions(model, data, batch_size=32, workers=workers)
    encode = (time.perf_counter() - start) / len(data)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "train.features.pt"
        inputs = [data.split, data.prepared, data.anchors]
        key = fingerprint(model, inputs, 32)
        if key is None:
            raise RuntimeError("the questions have no files to fingerprint: no disk cache to time")
        cache.save(path, key)
        start = time.perf_counter()  # what a later run does: fingerprint its inputs, then load
        if FeatureCache.load(path, fingerprint(model, inputs, 32) or "") is None:
            raise RuntimeError("the disk cache did not read back")
        read_back = (time.perf_counter() - start) / len(data)
    stream = (cache.batch(indices) for indices in micro_batch_indices(len(data), 0, batch, seed=0))
    timings = timed_steps(model, optimizer, stream, args)
    stored = sum(value.nbytes for entry in cache.entries for value in entry.values() if value is not None)
    return {
        **timings,
        "encode": encode,
        "read_back": read_back,
        "bytes_per_question": stored / len(cache),
        "parameters": sum(p.numel() for p in parameters),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "shapes"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per preset")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's training batch size")
    parser.add_argument("--questions", type=int, default=96, help="questions prepared (the batches cycle over them)")
    parser.add_argument("--reference-questions", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: stable when other jobs share the cores)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        presets = {preset: bench_preset(preset, args, Path(scratch), args.device) for preset in args.presets}
    result = {
        "presets": presets,
        "data": f"data/shapes-mini {SPLIT} split",
        "machine": {
            "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
