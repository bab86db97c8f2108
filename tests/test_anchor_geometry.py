"""The anchor path of the selector: where the question's anchor is, seen from every proposal.

Covers the relative geometry, the anchor loss, the warm start from a model without the path
(outputs unchanged at the first step), the config's refusals, and the anchor masks rebuilt from a
`shapes` split's seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from eval import rle
from llmseg.data.shapes import generate_sample, make_shapes
from llmseg.data.shapes.anchors import anchor_masks, load_anchors, write_anchors
from llmseg.data.shapes.queries import Filter
from llmseg.model.checkpoint import load_weights
from llmseg.model.config import LLMSegConfig, SelectorConfig
from llmseg.model.llmseg import LLMSeg
from llmseg.model.losses import anchor_loss, anchor_targets
from llmseg.model.presets import get_preset
from llmseg.model.selector import Selector, anchor_relative_geometry, pair_features
from llmseg.prepare import prepare
from llmseg.train import read_metrics, train, train_config_for

HIDDEN = 24
FIRST_EDITION = "llmseg/configs/shapes-first-edition.json"  # the shapes config without the anchor path


@pytest.fixture(scope="module")
def first_edition(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved model of the first edition's architecture (random weights), to warm-start from."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("first-edition") / "model"
    LLMSeg.from_config(LLMSegConfig.from_pretrained(FIRST_EDITION)).save_pretrained(folder)
    return folder


def boxes(batch: int = 2, count: int = 5, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(batch, count, 2, generator=generator) * 0.6
    sides = 0.1 + torch.rand(batch, count, 2, generator=generator) * 0.3
    area = torch.sqrt(sides[..., 0] * sides[..., 1])
    return torch.cat([corners, corners + sides, area[..., None]], dim=-1)


def test_a_certain_anchor_gives_each_proposal_its_pair_geometry_to_that_anchor() -> None:
    geometry = boxes()
    pairs = pair_features(geometry)
    logits = torch.full((2, 5), -1e4)
    logits[0, 3] = logits[1, 1] = 1e4
    valid = torch.ones(2, 5, dtype=torch.bool)
    relative = anchor_relative_geometry(logits, valid, pairs)
    assert relative.shape == (2, 5, 6)
    torch.testing.assert_close(relative[0, :, :5], pairs[0, :, 3])
    torch.testing.assert_close(relative[1, :, :5], pairs[1, :, 1])
    assert relative[0, 3, 5] == pytest.approx(1.0) and relative[0, 0, 5] == pytest.approx(0.0)


def test_padded_proposals_are_never_the_anchor() -> None:
    pairs = pair_features(boxes())
    logits = torch.zeros(2, 5)
    logits[:, 4] = 50.0  # the padded slot would win if it counted
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[:, 4] = False
    relative = anchor_relative_geometry(logits, valid, pairs)
    assert torch.all(relative[:, :, 5][:, 4] == 0)
    torch.testing.assert_close(relative[:, :, :5], pairs[:, :, :4].mean(dim=2))


def test_anchor_loss_is_the_cross_entropy_of_the_anchor_proposals() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0, 5.0], [0.5, 0.1, 0.2, 0.3]])
    anchor_iou = torch.tensor([[0.9, 0.1, 0.7, 0.0], [0.2, 0.0, 0.0, 0.1]])  # row 1: no anchor proposal
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    log_p = torch.log_softmax(logits[0, :3], dim=0)
    expected = -(log_p[0] + log_p[2]) / 2
    assert float(anchor_loss(logits, anchor_iou, valid)) == pytest.approx(float(expected), rel=1e-6)
    none = anchor_loss(logits.requires_grad_(), torch.zeros(2, 4), valid)
    assert none.item() == 0.0
    none.backward()  # still part of the graph


def test_anchor_targets_take_the_best_anchor_for_each_proposal() -> None:
    proposals = np.zeros((3, 8, 8), bool)
    proposals[0, :4, :4] = proposals[1, 4:, 4:] = proposals[2, :2, :] = True
    first, second = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    first[:4, :4] = second[4:, 4:] = True
    np.testing.assert_allclose(anchor_targets(proposals, [first, second])[:2], [1.0, 1.0])
    assert anchor_targets(proposals, [first])[1] == 0.0
    np.testing.assert_array_equal(anchor_targets(proposals, []), np.zeros(3))


def anchor_config(base: LLMSegConfig, **selector: object) -> LLMSegConfig:
    data = base.to_dict()
    data["selector"].update({"anchor_geometry": True, **selector})
    data["losses"]["anchor_weight"] = 1.0
    return LLMSegConfig.from_dict(data)


def test_warm_start_without_the_anchor_path_scores_exactly_as_before(first_edition: Path) -> None:
    torch.manual_seed(0)
    shapes = LLMSegConfig.from_pretrained(FIRST_EDITION)
    base = LLMSeg.from_pretrained(first_edition).eval()
    extended = LLMSeg.from_config(anchor_config(shapes))
    load_weights(extended, first_edition, new_modules=True)
    extended.eval()
    generated = [generate_sample(0, "validation", index) for index in (6, 8)]
    images = [np.asarray(_image(g)) for g in generated]
    batch = base.prepare_batch(
        images,
        [g.sample.query for g in generated],
        [base.proposal_generator(image).masks for image in images],
        [g.sample.mask for g in generated],
        anchors=[anchor_masks(g) for g in generated],
    )
    with torch.no_grad():
        before, after = base(batch), extended(batch)
    torch.testing.assert_close(after.iop, before.iop)
    torch.testing.assert_close(after.similarity, before.similarity)
    assert "anchor" in after.losses and "anchor" not in before.losses
    # Strict loading still refuses the older checkpoint for the extended config.
    with pytest.raises(ValueError, match="does not match"):
        load_weights(LLMSeg.from_config(anchor_config(shapes)), first_edition)


def test_a_checkpoint_missing_part_of_a_saved_module_is_refused(first_edition: Path, tmp_path: Path) -> None:
    shapes = LLMSegConfig.from_pretrained(FIRST_EDITION)
    LLMSeg.from_pretrained(first_edition).save_pretrained(tmp_path / "model")
    from safetensors.torch import load_file, save_file

    selector_file = tmp_path / "model" / "selector.safetensors"
    state = load_file(str(selector_file))
    del state["iop_head.0.weight"]
    save_file(state, str(selector_file))
    with pytest.raises(ValueError, match="iop_head"):
        load_weights(LLMSeg.from_config(anchor_config(shapes)), tmp_path / "model", new_modules=True)


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ({"pairwise_geometry": False}, "needs selector.pairwise_geometry"),
        ({"anchor_after": 0}, "anchor_after must lie in"),
        ({"anchor_after": 4}, "anchor_after must lie in"),
    ],
)
def test_bad_anchor_settings_are_clear_errors(selector: dict, message: str) -> None:
    shapes = LLMSegConfig.from_pretrained(FIRST_EDITION)
    with pytest.raises(ValueError, match=message):
        anchor_config(shapes, **selector)
    data = shapes.to_dict()
    data["losses"]["anchor_weight"] = 1.0  # without the head
    with pytest.raises(ValueError, match="only with selector.anchor_geometry"):
        LLMSegConfig.from_dict(data)


def test_the_anchor_head_learns_which_proposal_the_anchor_is() -> None:
    torch.manual_seed(0)
    config = SelectorConfig(
        dim=16, depth=2, num_heads=2, mlp_dim=32, iop_hidden=8, embedding_hidden=32,
        pairwise_geometry=True, anchor_geometry=True, anchor_after=1,
    )  # fmt: skip
    selector = Selector(config, hidden_size=HIDDEN)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(8, 5, 16, generator=generator)
    anchor = torch.randint(0, 5, (8,), generator=generator)
    features[torch.arange(8), anchor] += 3.0  # the anchor is recognisable from its features
    target = torch.nn.functional.one_hot(anchor, 5).float()
    valid = torch.ones(8, 5, dtype=torch.bool)
    optimiser = torch.optim.Adam(selector.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        out = selector(features, valid, torch.randn(8, HIDDEN, generator=generator), proposal_geometry=boxes(8, 5))
        loss = anchor_loss(out.anchor_logit, target, valid)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss))
    assert losses[0] > 0.8 * math.log(5) and losses[-1] < 0.1 * losses[0]


def _image(generated):  # noqa: ANN001, ANN202
    from io import BytesIO

    from PIL import Image

    return Image.open(BytesIO(generated.sample.image)).convert("RGB")


def test_anchor_masks_are_the_objects_the_question_names() -> None:
    seen = 0
    for index in range(40):
        generated = generate_sample(0, "validation", index)
        query = generated.question.query
        fields = ("anchor", "first", "second")
        named = [getattr(query, f) for f in fields if isinstance(getattr(query, f, None), Filter)]
        masks = anchor_masks(generated)
        assert len(masks) == len(named)
        for mask in masks:
            assert any(np.array_equal(mask, scene_mask) for scene_mask in generated.scene.masks)
            assert not (mask & generated.sample.mask).any()  # an anchor is never the answer
        seen += bool(masks)
    assert seen >= 5


def test_anchors_file_round_trip_and_wrong_seed(tmp_path: Path) -> None:
    make_shapes(tmp_path / "data", train=12, validation=0, test=0, seed=5)
    out = write_anchors(tmp_path / "data", "train", 5, tmp_path / "anchors.parquet")
    anchors = load_anchors(out)
    assert len(anchors) == 12
    for row in anchors:
        expected = anchor_masks(generate_sample(5, "train", int(row["id"].rsplit("-", 1)[1])))
        assert [rle.decode(m).tolist() for m in row["anchors"]] == [m.tolist() for m in expected]
    with pytest.raises(ValueError, match="pass the --seed the split was made with"):
        write_anchors(tmp_path / "data", "train", 6, tmp_path / "wrong.parquet")
    assert not (tmp_path / "wrong.parquet").exists()
    with pytest.raises(ValueError, match="no anchors file"):
        load_anchors(tmp_path / "missing.parquet")


def test_the_committed_shapes_model_has_the_anchor_path() -> None:
    config = LLMSeg.from_pretrained("shapes").config
    assert config.selector.anchor_geometry and config.losses.anchor_weight > 0


def test_training_with_the_anchor_loss_from_a_first_edition_model(first_edition: Path, tmp_path: Path) -> None:
    make_shapes(tmp_path / "data", train=12, validation=0, test=0, seed=5)
    prepare(get_preset("shapes"), str(tmp_path / "data"), "train", tmp_path / "prepared")
    anchors = write_anchors(tmp_path / "data", "train", 5, tmp_path / "anchors.parquet")
    config = get_preset("shapes")  # the preset's own config: the first edition's plus the anchor path
    settings = {"steps": 2, "batch_size": 4, "log_every": 1, "validation_split": "train", "validation_limit": 4}
    settings |= {"init_weights": str(first_edition), "data_workers": 0, "new_modules_lr_scale": 10.0}
    with pytest.raises(ValueError, match="new_modules_lr_scale must be positive"):
        train_config_for("shapes", settings | {"new_modules_lr_scale": 0.0})
    run = dict(prepared_dir=tmp_path / "prepared")
    with pytest.raises(ValueError, match="needs the training questions' anchor masks"):
        train(config, str(tmp_path / "data"), tmp_path / "no-anchors", train_config_for("shapes", settings), **run)
    with pytest.raises(ValueError, match="give --preset a config, not a model"):
        train(
            config, str(tmp_path / "data"), tmp_path / "both",
            train_config_for("shapes", settings | {"anchors": str(anchors)}), init_from=str(first_edition), **run,
        )  # fmt: skip
    output = tmp_path / "run"
    with_anchors = train_config_for("shapes", settings | {"anchors": str(anchors)})
    train(config, str(tmp_path / "data"), output, with_anchors, **run)
    logged = read_metrics(output / "metrics.csv")
    assert [step for step, _ in logged["anchor"]] == [1, 2]
    assert all(0 <= value < 10 for _, value in logged["anchor"]) and any(value > 0 for _, value in logged["anchor"])
    assert LLMSeg.from_pretrained(output / "best").config.selector.anchor_geometry
    # Only the anchor modules are new to the committed weights, so only they learn at the scaled rate.
    fresh = load_weights(LLMSeg.from_config(config), first_edition, new_modules=True)
    assert fresh and all(name.startswith(("selector.anchor_words", "selector.anchor_embedding",
                                          "selector.anchor_projection")) for name in fresh)  # fmt: skip
