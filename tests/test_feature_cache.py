"""Training the selection module alone on cached encoder outputs (``trainable="selector"``).

The cache must give the selector exactly what the full model gives it, and a selector-only run
must leave the region encoder and the VLM as they were.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from eval.contract import load_split
from llmseg.data.shapes import make_shapes
from llmseg.data.shapes.anchors import load_anchors, write_anchors
from llmseg.feature_cache import FeatureCache, fingerprint
from llmseg.model.llmseg import LLMSeg
from llmseg.model.presets import get_preset
from llmseg.prepare import load_prepared, prepare
from llmseg.train import TrainingData, collate, read_metrics, train, train_config_for

SEED = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shapes12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-question `shapes` train split with its colour proposals and anchor masks."""
    root = tmp_path_factory.mktemp("shapes12")
    make_shapes(root / "data", train=12, validation=0, test=0, seed=SEED)
    prepare(get_preset("shapes"), str(root / "data"), "train", root / "prepared")
    write_anchors(root / "data", "train", SEED, root / "anchors.parquet")
    return root


def _data(root: Path) -> TrainingData:
    split = load_split(str(root / "data"), "train")
    return TrainingData(split, load_prepared(root / "prepared", "train"), load_anchors(root / "anchors.parquet"))


def _frozen_model() -> LLMSeg:
    torch.manual_seed(0)
    model = LLMSeg.from_config(get_preset("shapes"))
    model.freeze_encoders()
    return model.train()


def test_cached_batches_score_exactly_as_the_full_model(shapes12: Path) -> None:
    model = _frozen_model()
    samples = [_data(shapes12)[index] for index in range(12)]
    # Built from two batches padded differently, read back in another order and grouping.
    cache = FeatureCache.build(model, [collate(model, samples[:5]), collate(model, samples[5:])], total=12)
    order = [7, 2, 11, 0, 5]
    full = model(collate(model, [samples[index] for index in order]))
    cached = model(cache.batch(order))

    assert "ce" in full.losses and "ce" not in cached.losses
    assert set(cached.losses) == {"align", "iop", "existence", "anchor"}
    for name, value in cached.losses.items():
        torch.testing.assert_close(value, full.losses[name], rtol=1e-5, atol=1e-6, msg=name)
    valid = cache.batch(order).proposal_valid  # scores past a question's proposals are meaningless
    assert valid.sum(dim=1).tolist() == [len(samples[index]["proposals"]) for index in order]
    torch.testing.assert_close(cached.iop[valid], full.iop[valid], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached.similarity[valid], full.similarity[valid], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached.existence_logit, full.existence_logit, rtol=1e-5, atol=1e-6)
    expected_total = full.loss - model.config.losses.ce_weight * full.losses["ce"]
    torch.testing.assert_close(cached.loss, expected_total, rtol=1e-5, atol=1e-6)


def test_frozen_encoders_stay_in_eval_mode_and_get_no_gradients() -> None:
    model = _frozen_model()
    model.train()
    assert model.selector.training and not model.vlm.training and not model.region_encoder.training
    assert not any(p.requires_grad for p in model.vlm.parameters())
    assert not any(p.requires_grad for p in model.region_encoder.parameters())
    assert all(p.requires_grad for p in model.selector.parameters())


def test_caching_needs_frozen_encoders(shapes12: Path) -> None:
    torch.manual_seed(0)
    model = LLMSeg.from_config(get_preset("shapes"))
    batch = collate(model, [_data(shapes12)[0]])
    with pytest.raises(ValueError, match="freeze_encoders"):
        FeatureCache.build(model, [batch], total=1)


def _selector_run(shapes12: Path, start: Path, output: Path, prepared: Path) -> None:
    """12 selector-only steps from the model at ``start``, validating on 4 training questions."""
    settings = {
        "steps": 12,
        "batch_size": 4,
        "learning_rate": 3e-3,
        "eval_every": 12,
        "log_every": 4,
        "validation_split": "train",
        "validation_limit": 4,
        "data_workers": 0,
        "anchors": str(shapes12 / "anchors.parquet"),
        "trainable": "selector",
    }
    train(
        get_preset("shapes"),
        str(shapes12 / "data"),
        output,
        train_config_for("shapes", settings),
        init_from=str(start),
        prepared_dir=prepared,
    )


def _saved_model(directory: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    LLMSeg.from_config(get_preset("shapes")).save_pretrained(directory)
    return directory


def test_selector_only_run_trains_the_selector_and_leaves_the_encoders(shapes12: Path, tmp_path: Path) -> None:
    start = _saved_model(tmp_path / "start", seed=0)
    before = LLMSeg.from_pretrained(start).state_dict()
    output = tmp_path / "run"
    prepared = tmp_path / "prepared"
    shutil.copytree(shapes12 / "prepared", prepared)
    _selector_run(shapes12, start, output, prepared)
    after = load_file(str(output / "last" / "model.safetensors"))
    encoders = [name for name in before if name.startswith(("vlm.", "region_encoder."))]
    selector = [name for name in before if name.startswith("selector.")]
    assert encoders and selector
    assert all(torch.equal(after[name], before[name]) for name in encoders)
    changed = [name for name in selector if not torch.equal(after[name], before[name])]
    assert len(changed) > len(selector) // 2, changed

    series = read_metrics(output / "metrics.csv")
    assert "ce" not in series and "anchor" in series
    losses = [value for _, value in series["loss"]]
    assert losses[-1] < losses[0]


def test_both_batch_kinds_move_every_tensor_and_share_the_rest(shapes12: Path) -> None:
    model = _frozen_model()
    samples = [_data(shapes12)[index] for index in range(3)]
    full = collate(model, samples)
    cached = FeatureCache.build(model, [full], total=3).batch([0, 1, 2])
    for batch in (full, cached):
        moved = batch.to("meta")  # a device every machine has: no data is copied
        assert type(moved) is type(batch)
        for name, value in vars(batch).items():
            if isinstance(value, torch.Tensor):
                assert getattr(moved, name).device.type == "meta", name
                assert getattr(moved, name).shape == value.shape, name
            else:
                assert getattr(moved, name) is value, name
    assert full.anchor_target is not None and full.to("meta").images is full.images


def test_a_second_selector_run_reads_the_encoded_questions_back(
    shapes12: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = _saved_model(tmp_path / "start", seed=0)
    prepared = tmp_path / "prepared"
    shutil.copytree(shapes12 / "prepared", prepared)
    _selector_run(shapes12, start, tmp_path / "first", prepared)
    assert (prepared / "train.features.pt").is_file()

    encoded: list[int] = []
    original = FeatureCache.build.__func__

    def counting_build(cls: type[FeatureCache], *args: object, **kwargs: object) -> FeatureCache:
        encoded.append(1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(FeatureCache, "build", classmethod(counting_build))
    _selector_run(shapes12, start, tmp_path / "second", prepared)
    assert encoded == []  # same encoders, same data: read back, not encoded
    first, second = read_metrics(tmp_path / "first" / "metrics.csv"), read_metrics(tmp_path / "second" / "metrics.csv")
    assert first == second  # bit for bit: every logged loss and validation score

    other = _saved_model(tmp_path / "other", seed=1)  # other encoder weights: the cache does not fit
    _selector_run(shapes12, other, tmp_path / "third", prepared)
    assert encoded == [1]


def test_an_unreadable_feature_cache_is_encoded_again(shapes12: Path, tmp_path: Path) -> None:
    model = _frozen_model()
    data = _data(shapes12)
    cache = FeatureCache.build(model, [collate(model, [data[index] for index in range(12)])], total=12)
    key = fingerprint(model, [data.split, data.prepared, data.anchors], 32)
    assert key is not None
    path = tmp_path / "train.features.pt"
    cache.save(path, key)
    loaded = FeatureCache.load(path, key)
    assert loaded is not None and len(loaded) == 12
    expected = cache.batch([3, 1])
    for name, value in vars(loaded.batch([3, 1])).items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, getattr(expected, name)), name
    assert FeatureCache.load(path, "another fingerprint") is None
    whole = path.read_bytes()
    for damaged in (whole[:100], b"", b"not a torch file", b"\x80\x04junk"):  # a full disk, a stray write
        path.write_bytes(damaged)
        assert FeatureCache.load(path, key) is None, damaged[:20]
    assert fingerprint(model, [data.split.select(range(6)), data.prepared, data.anchors], 32) != key
