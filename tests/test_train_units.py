"""Training's pure parts: data order and sharding across processes, schedule, settings."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest

from llmseg.train import (
    PRESET_TRAIN_DEFAULTS,
    TrainConfig,
    _apply_batch_settings,
    learning_rate_factor,
    micro_batch_indices,
    parse_tag_weights,
    sample_order,
    sampling_pool,
    train_config_for,
)


def take(iterator, count: int) -> list[list[int]]:
    return list(itertools.islice(iterator, count))


@pytest.mark.parametrize(("size", "batch", "processes"), [(10, 3, 1), (10, 2, 2), (16, 4, 2), (7, 2, 3), (5, 4, 2)])
def test_process_shares_are_disjoint_and_cover_each_global_batch(size: int, batch: int, processes: int) -> None:
    steps = 12
    single = take(micro_batch_indices(size, 0, batch * processes, seed=3), steps)
    shares = [take(micro_batch_indices(size, 0, batch, 3, rank, processes), steps) for rank in range(processes)]
    for step in range(steps):
        joined = [index for rank in range(processes) for index in shares[rank][step]]
        assert joined == single[step]  # the ranks' shares, in rank order, are exactly the global batch
        if batch * processes <= size:  # a global batch never holds one sample twice within an epoch
            positions = range(step * batch * processes, (step + 1) * batch * processes)
            epochs = {p // size for p in positions}
            if len(epochs) == 1:
                assert len(set(joined)) == len(joined)


@pytest.mark.parametrize(("size", "batch"), [(10, 3), (10, 5), (7, 4), (3, 8)])
def test_stream_is_the_epoch_permutations_back_to_back(size: int, batch: int) -> None:
    """Every epoch shows every sample once, even when batches straddle epoch boundaries."""
    epochs = 4
    stream = [
        i
        for chunk in take(micro_batch_indices(size, 0, batch, seed=1), math.ceil(epochs * size / batch))
        for i in chunk
    ]
    expected = np.concatenate([sample_order(size, epoch, 1) for epoch in range(epochs)]).tolist()
    assert stream[: epochs * size] == expected
    for epoch in range(epochs):
        assert sorted(stream[epoch * size : (epoch + 1) * size]) == list(range(size))


def test_starting_position_continues_the_same_stream() -> None:
    size, batch, processes = 11, 3, 2
    for rank in range(processes):
        full = take(micro_batch_indices(size, 0, batch, 5, rank, processes), 20)
        resumed = take(micro_batch_indices(size, 7 * batch * processes, batch, 5, rank, processes), 13)
        assert resumed == full[7:]


def test_order_depends_on_seed_and_epoch() -> None:
    assert not np.array_equal(sample_order(50, 0, 0), sample_order(50, 1, 0))
    assert not np.array_equal(sample_order(50, 0, 0), sample_order(50, 0, 1))
    assert np.array_equal(sample_order(50, 2, 7), sample_order(50, 2, 7))


def test_empty_training_split_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="training split is empty"):
        next(micro_batch_indices(0, 0, 4, seed=0))


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedule_warms_up_linearly_then_decays_to_zero(schedule: str) -> None:
    warmup, total = 10, 110
    factors = [learning_rate_factor(step, warmup, total, schedule) for step in range(total + 5)]
    assert factors[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert factors[warmup] == pytest.approx(1.0)
    assert factors[warmup + 50] == pytest.approx(0.5)  # half-way through the decay, both shapes
    quarter = factors[warmup + 25]
    assert quarter == pytest.approx(0.75 if schedule == "linear" else 0.5 * (1 + math.cos(math.pi / 4)))
    assert all(a >= b for a, b in zip(factors[warmup:], factors[warmup + 1 :], strict=False))
    assert factors[total:] == pytest.approx([0.0] * 5)


def test_settings_layer_release_preset_and_overrides() -> None:
    release = train_config_for("llmseg-7b")
    assert release == TrainConfig(lr_schedule="linear")
    assert (release.learning_rate, release.warmup_steps, release.steps, release.max_grad_norm) == (1e-4, 100, 5000, 1.0)
    assert (release.adam_beta1, release.adam_beta2, release.weight_decay, release.mixed_precision) == (
        0.9,
        0.95,
        0.0,
        "bf16",
    )
    assert release.batch_size * 2 * release.gradient_accumulation_steps == 20  # the release: 2 GPUs, batch 20
    shapes = train_config_for("shapes", {"steps": 7})
    assert shapes.batch_size == PRESET_TRAIN_DEFAULTS["shapes"]["batch_size"]
    assert shapes.steps == 7
    assert shapes.lr_schedule == "cosine"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"stepz": 3}, "unknown training setting"),
        ({"steps": 0}, "at least 1"),
        ({"eval_every": 0}, "eval_every"),
        ({"learning_rate": 0.0}, "positive"),
        ({"warmup_steps": -1}, "zero or more"),
        ({"validation_limit": 0}, "validation_limit"),
        ({"torch_threads": 0}, "torch_threads"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"lr_schedule": "step"}, "lr_schedule"),
    ],
)
def test_bad_settings_are_value_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train_config_for("tiny", overrides)


def test_deepspeed_gets_the_loops_batch_settings() -> None:
    """Without a DataLoader, DeepSpeed's micro-batch, accumulation and clipping come from TrainConfig."""
    plugin = SimpleNamespace(
        deepspeed_config={
            "train_micro_batch_size_per_gpu": "auto",
            "train_batch_size": "auto",
            "gradient_accumulation_steps": 1,  # what a launch config's environment would impose
            "gradient_clipping": "auto",
            "zero_optimization": {"stage": 2},
        }
    )
    accelerator = SimpleNamespace(
        state=SimpleNamespace(deepspeed_plugin=plugin), num_processes=2, gradient_accumulation_steps=1
    )
    settings = train_config_for("llmseg-7b", {"gradient_accumulation_steps": 3, "max_grad_norm": 0.5})
    _apply_batch_settings(accelerator, settings)
    assert accelerator.gradient_accumulation_steps == 3
    assert plugin.deepspeed_config == {
        "train_micro_batch_size_per_gpu": settings.batch_size,
        "train_batch_size": settings.batch_size * 3 * 2,
        "gradient_accumulation_steps": 3,
        "gradient_clipping": 0.5,
        "zero_optimization": {"stage": 2},
    }
    plugin.deepspeed_config["gradient_clipping"] = 2.0  # a value set in the DeepSpeed config file stays
    _apply_batch_settings(accelerator, settings)
    assert plugin.deepspeed_config["gradient_clipping"] == 2.0


def test_without_deepspeed_only_the_accumulation_is_set() -> None:
    accelerator = SimpleNamespace(
        state=SimpleNamespace(deepspeed_plugin=None), num_processes=1, gradient_accumulation_steps=1
    )
    _apply_batch_settings(accelerator, train_config_for("tiny", {"gradient_accumulation_steps": 4}))
    assert accelerator.gradient_accumulation_steps == 4


def test_tag_weights_repeat_samples_within_each_epoch() -> None:
    tags = [["attribute"], ["relation"], ["relation", "multi-target"], ["comparative"], []]
    weights = parse_tag_weights("relation=3, multi-target=2")
    assert weights == {"relation": 3, "multi-target": 2}
    pool = sampling_pool(tags, weights)
    assert sorted(pool.tolist()) == [0, 1, 1, 1, 2, 2, 2, 3, 4]  # the largest weight of a sample's tags
    stream = [i for chunk in take(micro_batch_indices(5, 0, 3, 2, pool=pool), 6) for i in chunk]
    for epoch in range(2):  # each epoch is a permutation of the pool
        assert sorted(stream[epoch * 9 : (epoch + 1) * 9]) == sorted(pool.tolist())
    resumed = take(micro_batch_indices(5, 6, 3, 2, pool=pool), 4)
    assert [i for chunk in resumed for i in chunk] == stream[6:18]


def test_a_joined_tag_weight_counts_only_samples_with_all_its_tags() -> None:
    tags = [["relation"], ["relation", "no-target"], ["attribute", "no-target"], ["no-target"]]
    weights = parse_tag_weights("relation=3,no-target=2,relation+no-target=6")
    assert weights == {"relation": 3, "no-target": 2, "relation+no-target": 6}
    assert np.bincount(sampling_pool(tags, weights)).tolist() == [3, 6, 2, 2]


@pytest.mark.parametrize(
    "text", ["relation", "relation=0", "relation=1.5", "relation=2,relation=3", "=2", "relation+=2", "+no-target=2"]
)
def test_bad_tag_weights_are_a_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="TAG=N"):
        train_config_for("tiny", {"tag_weights": text})
