"""Training: ``python -m llmseg train --preset NAME --data DIR_OR_HUB_ID``.

The loop runs through accelerate, so the same command trains on a CPU, one GPU, several GPUs
(``accelerate launch -m llmseg train ...``) or DeepSpeed ZeRO (an accelerate config file). It
reads proposals computed once by ``llmseg.prepare`` (run automatically when missing), validates
with the evaluation core (``eval.evaluate``, the leaderboard's own judge), keeps the best
checkpoint by validation gIoU, and can stop and resume anywhere: the model, optimiser,
scheduler, RNG states and the data position are all in each checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import math
import os
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed
from tqdm import tqdm

from eval import References, evaluate, rle
from eval.contract import load_split
from eval.report import Report
from llmseg import feature_cache
from llmseg.feature_cache import FeatureCache
from llmseg.model.checkpoint import load_weights
from llmseg.model.config import LLMSegConfig
from llmseg.model.llmseg import FeatureBatch, LLMSeg, TrainingBatch
from llmseg.model.selection import select
from llmseg.prepare import image_array, load_prepared, prepare, starting_point

TRAIN_STATE = "trainer_state.json"
METRICS_CSV = "metrics.csv"


@dataclass
class TrainConfig:
    """Optimisation settings. The defaults are the release's (facts sheet, section 1).

    batch_size is per process; the effective batch is batch_size x processes x
    gradient_accumulation_steps (the release: 10 x 2 GPUs x 1 = 20).
    """

    steps: int = 5000
    batch_size: int = 10
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 0.0
    warmup_steps: int = 100
    # The decay to zero after the linear warm-up: "linear" is the release's (DeepSpeed's
    # WarmupDecayLR) and the llmseg-7b preset's; the dataclass keeps "cosine", which every run
    # used before this option existed.
    lr_schedule: Literal["cosine", "linear"] = "cosine"
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    eval_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    train_split: str = "train"
    validation_split: str = "validation"
    validation_limit: int | None = None
    validation_batch_size: int = 32
    # DataLoader processes decoding images and proposals ahead of the model (0: in the main process).
    data_workers: int = 1
    # torch intra-op threads of each process. None: on a CPU, its share of the cores less one per
    # data worker; else torch's default. On CPUs shared with other jobs, 1 avoids threads stalling on
    # preempted siblings (8x faster in bench/train_speed.py).
    torch_threads: int | None = None
    # Not in the release: "TAG=N,TAG=N" shows every training question with one of these tags N
    # times per epoch (the largest N of its tags; integers, others once), so a fine-tune can spend
    # its updates on the question kinds the model fails most (the shapes model's relations).
    # "TAG+TAG=N" weights the questions that carry both (relations with no answer).
    tag_weights: str | None = None
    # Not in the release: the anchor masks of the training questions (a parquet file from
    # ``python -m llmseg.data shapes-anchors``), the labels of the anchor loss (losses.anchor_weight).
    anchors: str | None = None
    # Start from this model folder's weights although the config adds modules to its architecture
    # (e.g. selector.anchor_geometry); the added modules start from their initialisation.
    init_weights: str | None = None
    # With init_weights: the added modules learn at this multiple of learning_rate (they start from
    # scratch while everything else is fine-tuned at a low rate).
    new_modules_lr_scale: float = 1.0
    # Not in the release: "selector" freezes the region encoder and the VLM (no CE term then) and
    # trains the selection module on their outputs, computed once per question before the first
    # step (llmseg.feature_cache): each step then costs the selection module alone.
    trainable: Literal["all", "selector"] = "all"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Per-preset defaults where the release's do not fit (``shapes`` trains from scratch on a CPU).
PRESET_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "llmseg-7b": {"lr_schedule": "linear"},
    # A step of batch 16 takes 0.32 s here against 0.66 s at 32 (bench/train_speed.py): the same
    # samples/s, so an hour buys twice the updates; the rate follows the batch's square root.
    "shapes": {
        "steps": 10000,
        "batch_size": 16,
        "learning_rate": 7e-4,
        "weight_decay": 0.01,
        "warmup_steps": 200,
        "mixed_precision": "no",
        "eval_every": 250,
        "checkpoint_every": 250,
    },
    "tiny": {"steps": 50, "batch_size": 4, "learning_rate": 1e-3, "mixed_precision": "no", "warmup_steps": 5},
}
# The release's architecture on the shapes world (llmseg/configs/shapes-official.json): the settings
# of the README's ablation run (the first committed model's 2500 steps of batch 32).
PRESET_TRAIN_DEFAULTS["shapes-official"] = {
    **PRESET_TRAIN_DEFAULTS["shapes"],
    "steps": 2500,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "warmup_steps": 100,
}


def train_config_for(preset: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The release's defaults, then the preset's, then the caller's overrides (unknown keys rejected)."""
    values = {**PRESET_TRAIN_DEFAULTS.get(preset, {}), **(overrides or {})}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown training setting(s): {', '.join(unknown)}")
    config = TrainConfig(**values)
    if config.steps < 1 or config.batch_size < 1 or config.gradient_accumulation_steps < 1:
        raise ValueError("steps, batch_size and gradient_accumulation_steps must be at least 1")
    hints = typing.get_type_hints(TrainConfig)
    for name, hint in hints.items():
        if typing.get_origin(hint) is Literal and getattr(config, name) not in typing.get_args(hint):
            raise ValueError(f"{name} must be one of {', '.join(typing.get_args(hint))}")
    if min(config.eval_every, config.checkpoint_every, config.log_every, config.validation_batch_size) < 1:
        raise ValueError("eval_every, checkpoint_every, log_every and validation_batch_size must be at least 1")
    if config.learning_rate <= 0 or config.max_grad_norm <= 0 or config.new_modules_lr_scale <= 0:
        raise ValueError("learning_rate, max_grad_norm and new_modules_lr_scale must be positive")
    if config.warmup_steps < 0 or config.data_workers < 0 or config.weight_decay < 0:
        raise ValueError("warmup_steps, data_workers and weight_decay must be zero or more")
    if config.torch_threads is not None and config.torch_threads < 1:
        raise ValueError("torch_threads must be at least 1 (leave it out for torch's default)")
    if config.validation_limit is not None and config.validation_limit < 1:
        raise ValueError("validation_limit must be at least 1 (leave it out to validate on the whole split)")
    if config.tag_weights is not None:
        parse_tag_weights(config.tag_weights)
    return config


def parse_tag_weights(text: str) -> dict[str, int]:
    """``"relation=3,comparative=2"`` -> {"relation": 3, "comparative": 2}; a clear error otherwise.

    A key may join tags with ``+`` (``relation+no-target=6``): it weights only the samples that
    carry all of them, so a rare kind of question (a relation with no answer) can be shown more
    often than either tag alone is."""
    weights: dict[str, int] = {}
    for item in text.split(","):
        key, _, count = item.strip().partition("=")
        tags = key.split("+")
        if not all(tags) or not count.strip().isdigit() or int(count) < 1 or key in weights:
            raise ValueError(
                f"tag_weights {text!r}: write distinct TAG=N pairs with whole N >= 1, comma-separated; "
                "TAG may join tags with + to weight the samples that carry them all "
                "(e.g. relation=3,comparative=2,relation+no-target=6)"
            )
        weights[key] = int(count)
    return weights


def sampling_pool(tags: Sequence[Sequence[str]], weights: dict[str, int]) -> np.ndarray:
    """Sample indices, each repeated by the largest weight whose tags it all carries (1 without
    one): one epoch of tag-weighted training is a permutation of this pool."""
    keys = [(frozenset(key.split("+")), count) for key, count in weights.items()]
    repeats = [max([count for key, count in keys if key <= set(sample_tags)], default=1) for sample_tags in tags]
    return np.repeat(np.arange(len(tags)), repeats)


class TrainingData(torch.utils.data.Dataset):
    """A split joined with its prepared proposals; item ``i`` is question ``i`` decoded.

    Decoding (PNG images and masks, RLE proposals) is the slow, model-free part of a step, so it
    runs in DataLoader worker processes; ``collate`` then builds the model's batch.
    """

    def __init__(
        self, split: datasets.Dataset, prepared: datasets.Dataset, anchors: datasets.Dataset | None = None
    ) -> None:
        if len(split) != len(prepared) or split["id"] != prepared["id"]:
            raise ValueError("the prepared proposals do not match the split (different ids): run prepare again")
        if anchors is not None and anchors["id"] != split["id"]:
            raise ValueError("the anchors file does not match the split (different ids): run shapes-anchors on it")
        self.split = split
        self.prepared = prepared
        self.anchors = anchors

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """image (HWC uint8), query, proposals (K x H x W bool), target, ignore, id, tags, and the
        anchor masks (a list) when the data has an anchors file."""
        sample, proposals = self.split[index], self.prepared[index]
        image = image_array(sample["image"])
        height, width = image.shape[:2]
        masks = [rle.decode(p) for p in proposals["proposals"]]
        if masks and masks[0].shape != (height, width):
            raise ValueError(
                f"the prepared proposals of {sample['id']} are {masks[0].shape[0]}x{masks[0].shape[1]} but its image "
                f"is {height}x{width}: they come from other data; prepare again into an empty --prepared folder"
            )
        item = {
            "id": sample["id"],
            "image": image,
            "query": sample["query"],
            "proposals": np.stack(masks) if masks else np.zeros((0, height, width), bool),
            "target": np.asarray(sample["mask"].convert("L")) > 127,
            "ignore": np.asarray(sample["ignore"].convert("L")) > 127 if sample["ignore"] is not None else None,
            "tags": sample["tags"],
        }
        if self.anchors is not None:
            item["anchors"] = [rle.decode(mask) for mask in self.anchors[index]["anchors"]]
        return item


def collate(model: LLMSeg, samples: Sequence[dict[str, Any]]) -> TrainingBatch:
    """Decoded samples -> the model's batch (targets measured, masks resized to the feature map)."""
    return model.prepare_batch(
        [s["image"] for s in samples],
        [s["query"] for s in samples],
        [s["proposals"] for s in samples],
        [s["target"] for s in samples],
        ignores=[s["ignore"] for s in samples],
        anchors=[s["anchors"] for s in samples] if "anchors" in samples[0] else None,
    )


def _as_list(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return samples


def loader(
    data: TrainingData,
    batches: Iterator[list[int]] | list[list[int]],
    workers: int,
    collate_fn: Callable[[list[dict[str, Any]]], Any] = _as_list,
) -> torch.utils.data.DataLoader:
    """Micro-batches in the order ``batches`` gives, decoded (and passed through ``collate_fn``)
    ahead by ``workers`` processes."""
    return torch.utils.data.DataLoader(
        data,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate_fn,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        # Forked workers inherit ``collate_fn`` (a model, for training_batches) instead of pickling it.
        multiprocessing_context="fork" if workers else None,
        # Its own generator: a new iterator would otherwise draw a worker seed from the global torch
        # RNG, so validating (or resuming) would shift every later dropout mask.
        generator=torch.Generator().manual_seed(0),
    )


def training_batches(
    model: LLMSeg, data: TrainingData, batches: Iterator[list[int]], workers: int
) -> Iterator[TrainingBatch]:
    """Model-ready micro-batches in the order ``batches`` gives.

    On a CPU, worker processes also collate (measure targets, resize masks to the feature map: up
    to half a step's time for the ``shapes`` preset), so the model never waits for it; collation
    depends on the config only, not on weights, so the workers' copy of the model stays valid. A
    model on an accelerator collates in the main process, as forked workers cannot use CUDA.
    """
    if workers and model.device.type == "cpu":
        yield from loader(data, batches, workers, functools.partial(collate, model))
    else:
        for samples in loader(data, batches, workers):
            yield collate(model, samples)


def in_order_batches(size: int, batch_size: int) -> list[list[int]]:
    """Indices 0..size-1 cut into consecutive batches of ``batch_size`` (the last may be shorter):
    one pass over a split, as validation and encoding make it."""
    return [list(range(start, min(start + batch_size, size))) for start in range(0, size, batch_size)]


def encode_questions(model: LLMSeg, data: TrainingData, *, batch_size: int, workers: int) -> FeatureCache:
    """Every question of ``data`` through ``model``'s frozen encoders once, in index order."""
    batches = in_order_batches(len(data), batch_size)
    return FeatureCache.build(model, training_batches(model, data, iter(batches), workers), total=len(data))


def cached_batches(
    model: LLMSeg,
    data: TrainingData,
    batches: Iterator[list[int]],
    train_config: TrainConfig,
    cache_dir: Path | None = None,
) -> Iterator[FeatureBatch]:
    """``training_batches`` for a model whose encoders are frozen: every question is encoded once,
    then each micro-batch is gathered from the cache. With ``cache_dir`` the encoded questions are
    kept there and read back by any later run on the same encoders and data (a resume, a sweep)."""
    batch_size = train_config.validation_batch_size
    key = feature_cache.fingerprint(model, [data.split, data.prepared, data.anchors], batch_size) if cache_dir else None
    path = cache_dir / f"{train_config.train_split}.features.pt" if cache_dir and key else None
    cache = FeatureCache.load(path, key) if path and key else None
    if cache is not None:
        tqdm.write(f"encoder outputs of {len(cache)} questions read from {path}")
    else:
        cache = encode_questions(model, data, batch_size=batch_size, workers=train_config.data_workers)
        if path and key:
            cache.save(path, key)
    for indices in batches:
        yield cache.batch(indices)


def sample_order(size: int, epoch: int, seed: int) -> np.ndarray:
    """The shuffled order of epoch ``epoch``: a function of (seed, epoch) only, so resuming is exact."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def micro_batch_indices(
    size: int,
    start: int,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    num_processes: int = 1,
    pool: np.ndarray | None = None,
) -> Iterator[list[int]]:
    """Endless micro-batches from global sample position ``start``; each process takes its own share.

    Global position p is sample ``sample_order(size, p // size, seed)[p % size]``, so the stream is
    the epochs' permutations back to back (a batch that crosses an epoch boundary ends one epoch and
    starts the next), and it depends only on ``start``: a resumed run continues exactly. Each global
    batch of ``batch_size * num_processes`` positions is cut into contiguous, disjoint shares.
    With a ``pool`` (``sampling_pool``), epochs permute the pool's entries and yield the samples they name.
    """
    if pool is not None:
        size = len(pool)
    if size < 1:
        raise ValueError("the training split is empty: give a dataset with at least one training question")
    global_batch = batch_size * num_processes
    position = start
    epoch, order = -1, np.empty(0, dtype=np.int64)
    while True:
        first = position + process_index * batch_size
        share = []
        for p in range(first, first + batch_size):  # positions only grow: one epoch's order cached
            if p // size != epoch:
                epoch = p // size
                order = sample_order(size, epoch, seed)
            position_in_epoch = int(order[p % size])
            share.append(int(pool[position_in_epoch]) if pool is not None else position_in_epoch)
        yield share
        position += global_batch


def learning_rate_factor(step: int, warmup: int, total: int, schedule: str = "cosine") -> float:
    """Learning-rate factor of optimiser step ``step`` (from 0): linear warm-up over ``warmup`` steps,
    then a ``"cosine"`` or ``"linear"`` decay that reaches zero at step ``total``.

    The warm-up starts at 1/warmup, not at zero as DeepSpeed's WarmupDecayLR does, so no step is wasted.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def validate(
    model: LLMSeg, data: TrainingData, references: References, *, batch_size: int, workers: int = 0
) -> tuple[Report, float]:
    """Predict every validation question from its prepared proposals; score with ``eval.evaluate``.

    Returns the report and the mean validation loss.
    """
    was_training = model.training
    model.eval()
    predictions: dict[str, dict[str, Any]] = {}
    losses = []
    for samples in loader(data, in_order_batches(len(data), batch_size), workers):
        output = model(collate(model, samples))
        losses.append(float(output.loss) * len(samples))
        existence = torch.sigmoid(output.existence_logit) if output.existence_logit is not None else None
        for row, sample in enumerate(samples):
            count = len(sample["proposals"])
            iop = output.iop[row, :count].float().cpu().numpy()
            similarity = output.similarity[row, :count].float().cpu().numpy()
            chosen = select(
                iop, similarity, model.config.selection, None if existence is None else float(existence[row])
            )
            mask = sample["proposals"][chosen].any(axis=0) if chosen.any() else np.zeros_like(sample["target"])
            predictions[sample["id"]] = rle.encode(mask)
    model.train(was_training)
    return evaluate(predictions, references, n_bootstrap=200), sum(losses) / max(1, len(data))


def _apply_batch_settings(accelerator: Accelerator, train_config: TrainConfig) -> None:
    """Make accelerate (and DeepSpeed, when launched with it) use ``train_config``'s batch settings.

    A launch config's ``gradient_accumulation_steps`` reaches accelerate through the environment and
    would override the constructor's, while this loop always runs ``train_config``'s count of
    micro-batches per step. DeepSpeed reads its micro-batch size from a prepared DataLoader, which
    this loop does not use, and ``gradient_clipping: auto`` would become accelerate's 1.0 instead of
    ``max_grad_norm``.
    """
    accelerator.gradient_accumulation_steps = train_config.gradient_accumulation_steps
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    config = plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = train_config.batch_size
    config["gradient_accumulation_steps"] = train_config.gradient_accumulation_steps
    config["train_batch_size"] = (
        train_config.batch_size * train_config.gradient_accumulation_steps * accelerator.num_processes
    )
    if config.get("gradient_clipping", "auto") == "auto":
        config["gradient_clipping"] = train_config.max_grad_norm


def _unwrap(accelerator: Accelerator, model: torch.nn.Module) -> LLMSeg:
    return typing.cast(LLMSeg, accelerator.unwrap_model(model))


def train(
    config: LLMSegConfig,
    data: str,
    output: str | Path,
    train_config: TrainConfig,
    *,
    init_from: str | None = None,
    validation_data: str | None = None,
    prepared_dir: str | Path | None = None,
    resume: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``config`` (or the model at ``init_from``) on ``data``; write checkpoints to ``output``.

    The validation split comes from ``validation_data`` when given (e.g. a committed mini split
    beside a large generated training set), else from ``data``.

    ``output/last`` holds the resumable state, ``output/best`` the best model by validation gIoU
    (a normal model folder), ``output/metrics.csv`` the log and ``output/training.png`` the plot.
    ``stop_after`` ends the run after that many optimiser steps in this call (tests use it to
    interrupt). Returns the final trainer state.
    """
    # Settings that contradict each other fail before any proposals are prepared.
    if config.losses.anchor_weight > 0 and not train_config.anchors:
        raise ValueError(
            "losses.anchor_weight > 0 needs the training questions' anchor masks: pass --anchors FILE "
            "(python -m llmseg.data shapes-anchors writes it)"
        )
    if init_from and train_config.init_weights:
        raise ValueError("--init-weights starts a config from a model's weights: give --preset a config, not a model")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(
        mixed_precision=train_config.mixed_precision,
        gradient_accumulation_steps=train_config.gradient_accumulation_steps,
        cpu=not torch.cuda.is_available(),
        # accelerate would step a prepared scheduler num_processes times per optimiser step (it
        # assumes the DataLoader's batch grew with the process count); ours counts optimiser steps.
        step_scheduler_with_optimizer=False,
        # Some trainable weights may not reach the loss (e.g. a fully fine-tuned CLIP tower's last
        # layer when features come from the one before it); DDP must not wait for their gradients.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    _apply_batch_settings(accelerator, train_config)
    if train_config.torch_threads is not None:
        torch.set_num_threads(train_config.torch_threads)
    elif accelerator.device.type == "cpu" and train_config.data_workers:
        # Leave the decoding workers (and the other processes) their cores: oversubscribed OpenMP
        # threads spin and made each step 3x slower on a 2-core machine.
        cores = (os.cpu_count() or 1) // accelerator.num_processes
        torch.set_num_threads(max(1, cores - train_config.data_workers))
    set_seed(train_config.seed)
    prepared_dir = Path(prepared_dir) if prepared_dir else output / "prepared"
    splits = (train_config.train_split, train_config.validation_split)
    sources = (data, validation_data or data)
    for split, source in zip(splits, sources, strict=True):
        if accelerator.is_main_process and not (prepared_dir / f"{split}.parquet").is_file():
            # SAM runs on the accelerator; the colour generator is CPU work shared by worker processes.
            device = str(accelerator.device) if config.proposals.kind == "sam" else "cpu"
            prepare(config, source, split, prepared_dir, device=device, workers=max(1, train_config.data_workers))
    accelerator.wait_for_everyone()

    anchors = None
    if train_config.anchors:
        from llmseg.data.shapes.anchors import load_anchors  # only anchored training reads the synthetic world

        anchors = load_anchors(train_config.anchors)
    train_data = TrainingData(load_split(data, splits[0]), load_prepared(prepared_dir, splits[0]), anchors)
    validation_split = load_split(sources[1], splits[1])
    validation_prepared = load_prepared(prepared_dir, splits[1])
    if train_config.validation_limit:
        keep = range(min(train_config.validation_limit, len(validation_split)))
        validation_split, validation_prepared = validation_split.select(keep), validation_prepared.select(keep)
    validation_set = TrainingData(validation_split, validation_prepared)
    references = References.from_split(validation_split)

    model = LLMSeg.from_pretrained(init_from) if init_from else LLMSeg.from_config(config)
    fresh = set()
    if train_config.init_weights:
        fresh = set(load_weights(model, train_config.init_weights, new_modules=True))
    if train_config.trainable == "selector":
        model.freeze_encoders()
    model.train()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    parameters = [p for _, p in trainable]
    groups = [{"params": [p for name, p in trainable if name not in fresh]}]
    if fresh:
        scaled = train_config.learning_rate * train_config.new_modules_lr_scale
        groups.append({"params": [p for name, p in trainable if name in fresh], "lr": scaled})
    optimizer = torch.optim.AdamW(
        groups,
        lr=train_config.learning_rate,
        betas=(train_config.adam_beta1, train_config.adam_beta2),
        weight_decay=train_config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: learning_rate_factor(
            step, train_config.warmup_steps, train_config.steps, train_config.lr_schedule
        ),
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    state = {"step": 0, "best_giou": -1.0, "best_step": None}
    last = output / "last"
    if resume and (last / TRAIN_STATE).is_file():
        accelerator.load_state(str(last))
        state = json.loads((last / TRAIN_STATE).read_text())
        accelerator.print(f"resumed from {last} at step {state['step']}")
    elif accelerator.is_main_process:  # a fresh run: the log starts over
        (output / METRICS_CSV).unlink(missing_ok=True)
    (output / "train_config.json").write_text(json.dumps(train_config.to_dict(), indent=2) + "\n")
    config.save_pretrained(output)

    micro = train_config.batch_size
    per_step = micro * accelerator.num_processes * train_config.gradient_accumulation_steps
    pool = (
        sampling_pool(train_data.split["tags"], parse_tag_weights(train_config.tag_weights))
        if train_config.tag_weights
        else None
    )
    batches = micro_batch_indices(
        len(train_data),
        state["step"] * per_step,
        micro,
        train_config.seed,
        accelerator.process_index,
        accelerator.num_processes,
        pool,
    )
    end = train_config.steps if stop_after is None else min(train_config.steps, state["step"] + stop_after)
    progress = tqdm(
        total=train_config.steps, initial=state["step"], desc="training", disable=not accelerator.is_main_process
    )
    if state["step"] == 0:  # the untrained score: where the curve starts
        _validate_and_keep_best(accelerator, model, validation_set, references, train_config, output, state)
    running: dict[str, list[float]] = {}
    unwrapped = _unwrap(accelerator, model)
    micro_batches: Iterator[TrainingBatch | FeatureBatch]
    if train_config.trainable == "selector":
        micro_batches = cached_batches(unwrapped, train_data, batches, train_config, prepared_dir)
    else:
        micro_batches = training_batches(unwrapped, train_data, batches, train_config.data_workers)
    while state["step"] < end:
        for _ in range(train_config.gradient_accumulation_steps):
            with accelerator.accumulate(model):
                out = model(next(micro_batches))
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(parameters, train_config.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad()
            for name, value in {"loss": out.loss, **out.losses}.items():
                running.setdefault(name, []).append(float(value.detach()))
        state["step"] += 1
        progress.update(1)
        step = state["step"]
        if step % train_config.log_every == 0 or step == end:
            row = _mean_over_processes(accelerator, running)
            row["lr"] = scheduler.get_last_lr()[0]
            progress.set_postfix(loss=f"{row['loss']:.4f}")
            _log(output, step, row, accelerator)
            running = {}
        if step % train_config.eval_every == 0 or step == train_config.steps:
            _validate_and_keep_best(accelerator, model, validation_set, references, train_config, output, state)
        if step % train_config.checkpoint_every == 0 or step == end:
            _checkpoint(accelerator, last, state)
    progress.close()
    micro_batches.close()  # stops the worker processes
    if accelerator.is_main_process:
        plot_metrics(output / METRICS_CSV, output / "training.png")
    return broadcast_object_list([state])[0]  # the main process keeps the best-model bookkeeping


def _validate_and_keep_best(
    accelerator: Accelerator,
    model: torch.nn.Module,
    data: TrainingData,
    references: References,
    train_config: TrainConfig,
    output: Path,
    state: dict[str, Any],
) -> None:
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return
    report, loss = validate(
        _unwrap(accelerator, model),
        data,
        references,
        batch_size=train_config.validation_batch_size,
        workers=train_config.data_workers,
    )
    row: dict[str, float] = {"val_loss": loss, "val_giou": report.giou, "val_ciou": report.ciou}
    row.update({f"val_giou/{tag}": scores["giou"] for tag, scores in sorted(report.by_tag.items())})
    _log(output, state["step"], row, accelerator)
    accelerator.print(f"step {state['step']}: validation gIoU {report.giou:.4f} cIoU {report.ciou:.4f}")
    if report.giou > state["best_giou"]:
        state["best_giou"], state["best_step"] = report.giou, state["step"]
        _unwrap(accelerator, model).save_pretrained(output / "best")
        (output / "best" / "validation_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    accelerator.wait_for_everyone()


def _mean_over_processes(accelerator: Accelerator, running: dict[str, list[float]]) -> dict[str, float]:
    """Each loss averaged over the interval's micro-batches of every process (a collective call)."""
    names = list(running)
    means = torch.tensor([float(np.mean(running[name])) for name in names], dtype=torch.float64)
    means = accelerator.reduce(means.to(accelerator.device), reduction="mean")
    return dict(zip(names, means.tolist(), strict=True))


def _checkpoint(accelerator: Accelerator, last: Path, state: dict[str, Any]) -> None:
    accelerator.save_state(str(last))
    if accelerator.is_main_process:
        (last / TRAIN_STATE).write_text(json.dumps(state, indent=2) + "\n")


def _log(output: Path, step: int, row: dict[str, float], accelerator: Accelerator) -> None:
    """Append one row to metrics.csv (long format: step, name, value, so columns never change)."""
    if not accelerator.is_main_process:
        return
    path = output / METRICS_CSV
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["step", "name", "value"])
        for name, value in row.items():
            writer.writerow([step, name, f"{value:.6g}"])


def read_metrics(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv -> {name: [(step, value), ...]}; a resumed run's repeated steps keep the last value."""
    series: dict[str, dict[int, float]] = {}
    with Path(path).open() as handle:
        for record in csv.DictReader(handle):
            series.setdefault(record["name"], {})[int(record["step"])] = float(record["value"])
    return {name: sorted(values.items()) for name, values in series.items()}


def plot_metrics(metrics_csv: str | Path, out_png: str | Path) -> Path:
    """A two-panel PNG: training losses, and validation gIoU/cIoU, against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics(metrics_csv)
    figure, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for name in ("loss", "ce", "align", "iop", "existence", "anchor", "val_loss"):
        if name in series:
            steps, values = zip(*series[name], strict=True)
            loss_axis.plot(steps, values, label=name, linestyle="--" if name == "val_loss" else "-")
    loss_axis.set(xlabel="optimiser step", ylabel="loss", title="Training losses", yscale="log")
    loss_axis.legend(fontsize=8)
    for name in ("val_giou", "val_ciou"):
        if name in series:
            steps, values = zip(*series[name], strict=True)
            score_axis.plot(steps, values, marker="o", label=name.replace("val_", "validation "))
    score_axis.set(xlabel="optimiser step", ylabel="score", title="Validation (eval core)", ylim=(0, 1))
    score_axis.grid(alpha=0.3)
    score_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out_png)
    plt.close(figure)
    return Path(out_png)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (through accelerate: CPU, GPUs, DeepSpeed)",
        description=(
            "Every TrainConfig field is a flag. Defaults: the release's, then the preset's "
            f"({', '.join(f'{name}: {values}' for name, values in PRESET_TRAIN_DEFAULTS.items())})."
        ),
    )
    parser.add_argument(
        "--preset", required=True, help="preset name (tiny, shapes, llmseg-7b), a config.json, or a model folder"
    )
    parser.add_argument("--data", required=True, help="dataset folder or Hub id with the training split")
    parser.add_argument("--validation-data", default=None, help="dataset with the validation split (default: --data)")
    parser.add_argument("--output", default=None, help="run folder (default runs/<preset>)")
    parser.add_argument("--prepared", default=None, help="folder of prepared proposals (default <output>/prepared)")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if <output>/last exists")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = hints[f.name]
        choices = typing.get_args(kind) if typing.get_origin(kind) is Literal else None
        caster = {int: int, float: float, str: str}.get(kind, int if "int" in str(kind) else str)
        flag = f"--{f.name.replace('_', '-')}"
        parser.add_argument(
            flag,
            dest=f"set_{f.name}",
            type=caster,
            choices=choices,
            default=None,
            metavar=None if choices else f.name.upper(),
            help=f"release default: {f.default}",
        )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    config, directory = starting_point(args.preset)
    overrides = {
        name[len("set_") :]: value
        for name, value in vars(args).items()
        if name.startswith("set_") and value is not None
    }
    train_config = train_config_for(config.name, overrides)
    output = args.output or f"runs/{Path(args.preset).name}"
    state = train(
        config,
        args.data,
        output,
        train_config,
        init_from=str(directory) if directory is not None else None,
        validation_data=args.validation_data,
        prepared_dir=args.prepared,
        resume=not args.no_resume,
    )
    if PartialState().is_main_process:
        print(f"best validation gIoU {state['best_giou']:.4f} at step {state['best_step']}; model in {output}/best")
    return 0
