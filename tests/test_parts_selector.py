"""Selector: shapes, release parameter layout, equivalence to segment-anything's block, padding, gradients."""

from __future__ import annotations

import re

import pytest
import torch
from segment_anything.modeling.transformer import TwoWayAttentionBlock

from llmseg.model import selector as selector_module
from llmseg.model.config import SelectorConfig
from llmseg.model.selector import FusionBlock, Selector

HIDDEN = 24


def tiny_selector(**overrides) -> Selector:
    settings = dict(dim=16, depth=2, num_heads=2, mlp_dim=32, iop_hidden=8, embedding_hidden=32)
    settings.update(overrides)
    torch.manual_seed(0)
    return Selector(SelectorConfig(**settings), hidden_size=HIDDEN).eval()


def inputs(batch=2, count=5, tokens=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return dict(
        proposal_features=torch.randn(batch, count, 16, generator=generator),
        proposal_valid=torch.ones(batch, count, dtype=torch.bool),
        seg_hidden=torch.randn(batch, HIDDEN, generator=generator),
        token_hidden=torch.randn(batch, tokens, HIDDEN, generator=generator),
        token_valid=torch.ones(batch, tokens, dtype=torch.bool),
    )


@pytest.mark.parametrize("query_tokens", ["seg", "all"])
def test_output_shapes_and_ranges(query_tokens):
    selector = tiny_selector(query_tokens=query_tokens, existence_head=True)
    out = selector(**inputs())
    assert out.iop.shape == (2, 5) and out.similarity.shape == (2, 5)
    assert out.query.shape == (2, 16) and out.existence_logit.shape == (2,)
    assert torch.all((out.iop >= 0) & (out.iop <= 1))
    assert torch.all(out.similarity.abs() <= 1 + 1e-6)
    assert tiny_selector().forward(**inputs()).existence_logit is None


def test_parameters_line_up_with_the_release_checkpoint():
    """Every selection-module key of the released checkpoint maps onto one of ours, same shape."""
    hidden = 64  # the LLM width only sizes text_projection; 4096 in the release
    release = {
        "text_hidden_fcs.0.0.weight": (hidden, hidden),
        "text_hidden_fcs.0.0.bias": (hidden,),
        "text_hidden_fcs.0.2.weight": (256, hidden),
        "text_hidden_fcs.0.2.bias": (256,),
        "lisa_final_attn.q_proj.weight": (256, 256),
        "lisa_norm_final_attn.weight": (256,),
        "lisa_iou_head.0.weight": (128, 256),
        "lisa_iou_head.2.weight": (1, 128),
        "lisa_embedding_head.0.weight": (2048, 256),
        "lisa_embedding_head.2.weight": (256, 2048),
    }
    for layer in range(2):
        for attn in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token"):
            for proj in ("q", "k", "v", "out"):
                release[f"lisa_attention_layers.{layer}.{attn}.{proj}_proj.weight"] = (256, 256)
                release[f"lisa_attention_layers.{layer}.{attn}.{proj}_proj.bias"] = (256,)
        for norm in range(1, 5):
            release[f"lisa_attention_layers.{layer}.norm{norm}.weight"] = (256,)
        release[f"lisa_attention_layers.{layer}.mlp.lin1.weight"] = (2048, 256)
        release[f"lisa_attention_layers.{layer}.mlp.lin2.weight"] = (256, 2048)
    renames = [
        (r"^text_hidden_fcs\.0\.", "text_projection."),
        (r"^lisa_attention_layers\.", "blocks."),
        (r"^lisa_final_attn\.", "final_attn."),
        (r"^lisa_norm_final_attn\.", "norm_final_attn."),
        (r"^lisa_iou_head\.", "iop_head."),
        (r"^lisa_embedding_head\.", "embedding_head."),
    ]
    ours = {name: tuple(t.shape) for name, t in Selector(SelectorConfig(), hidden_size=hidden).state_dict().items()}
    for key, shape in release.items():
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        assert ours.get(key) == shape, key
    # and nothing beyond the release's modules unless an option asks for it
    assert not any(name.startswith("existence_head") for name in ours)


def test_fusion_block_equals_segment_anything_block_with_zero_encodings():
    torch.manual_seed(0)
    block = FusionBlock(16, 2, 32, attention_downsample_rate=1)
    queries, keys = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    ours = block(queries, keys, torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool))
    reference = TwoWayAttentionBlock.forward(block, queries, keys, torch.zeros_like(queries), torch.zeros_like(keys))
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("query_tokens", ["seg", "all"])
def test_padding_does_not_change_valid_outputs(query_tokens):
    selector = tiny_selector(query_tokens=query_tokens, existence_head=True)
    batch = inputs(batch=2, count=6, tokens=5)
    batch["proposal_valid"][0, 4:] = False
    batch["token_valid"][0, 3:] = False
    padded = selector(**batch)
    alone = selector(
        proposal_features=batch["proposal_features"][:1, :4],
        proposal_valid=batch["proposal_valid"][:1, :4],
        seg_hidden=batch["seg_hidden"][:1],
        token_hidden=batch["token_hidden"][:1, :3],
        token_valid=batch["token_valid"][:1, :3],
    )
    torch.testing.assert_close(padded.iop[0, :4], alone.iop[0])
    torch.testing.assert_close(padded.similarity[0, :4], alone.similarity[0])
    torch.testing.assert_close(padded.existence_logit[:1], alone.existence_logit)


def test_query_tokens_decide_what_the_proposals_attend_to():
    batch, changed = inputs(), inputs()
    changed["token_hidden"] = changed["token_hidden"] + 1.0
    seg_only = tiny_selector(query_tokens="seg")
    torch.testing.assert_close(seg_only(**batch).iop, seg_only(**changed).iop)
    every_token = tiny_selector(query_tokens="all")
    assert not torch.allclose(every_token(**batch).iop, every_token(**changed).iop)
    with pytest.raises(ValueError, match="pass token_hidden"):
        every_token(batch["proposal_features"], batch["proposal_valid"], batch["seg_hidden"])


def test_key_positions_make_word_order_visible():
    """Without key positions the proposals see the query's tokens as a bag; with them, order counts."""
    batch = inputs(tokens=4)
    reordered = dict(batch, token_hidden=batch["token_hidden"][:, [2, 0, 3, 1]])
    bag = tiny_selector(query_tokens="all")
    torch.testing.assert_close(bag(**batch).iop, bag(**reordered).iop)
    ordered = tiny_selector(query_tokens="all", key_positions=8)
    assert not torch.allclose(ordered(**batch).iop, ordered(**reordered).iop)
    with pytest.raises(ValueError, match="raise key_positions"):
        ordered(**inputs(tokens=8))


def test_token_similarity_query_compares_proposals_with_the_question_words():
    batch = inputs()
    other_words = dict(batch, token_hidden=batch["token_hidden"].flip(0))  # the other sample's words
    seg_query = tiny_selector(query_tokens="seg")
    torch.testing.assert_close(seg_query(**batch).query, seg_query(**other_words).query)
    word_query = tiny_selector(query_tokens="seg", similarity_query="tokens")
    assert not torch.allclose(word_query(**batch).similarity, word_query(**other_words).similarity)
    padded = dict(batch, token_hidden=torch.cat([batch["token_hidden"], torch.randn(2, 3, HIDDEN)], dim=1))
    padded["token_valid"] = torch.cat([batch["token_valid"], torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(word_query(**padded).query, word_query(**batch).query)
    with pytest.raises(ValueError, match="pass token_hidden"):
        word_query(batch["proposal_features"], batch["proposal_valid"], batch["seg_hidden"])


def test_input_mlp_is_a_residual_step_before_the_fusion_blocks():
    batch = inputs()
    plain = tiny_selector(query_tokens="all")
    with_mlp = tiny_selector(query_tokens="all", input_mlp=True)
    with_mlp.load_state_dict(plain.state_dict(), strict=False)  # the same blocks and heads
    assert not torch.allclose(with_mlp(**batch).iop, plain(**batch).iop)
    with torch.no_grad():  # a zero last layer makes the residual MLP the identity
        with_mlp.input_mlp[-1].weight.zero_()
        with_mlp.input_mlp[-1].bias.zero_()
    torch.testing.assert_close(with_mlp(**batch).iop, plain(**batch).iop)


def boxes(batch=2, count=5, seed=1):
    """(B, K, 5) valid boxes: left < right, top < bottom, sqrt area within the box."""
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(batch, count, 2, 2, generator=generator).sort(dim=2).values
    left_top, right_bottom = corners[:, :, 0], corners[:, :, 1]
    side = torch.sqrt((right_bottom - left_top).prod(dim=-1, keepdim=True))
    return torch.cat([left_top, right_bottom, side], dim=-1)


def test_pair_features_describe_each_proposal_from_each_other():
    geometry = torch.tensor([[[0.0, 0.0, 0.2, 0.2, 0.2], [0.6, 0.0, 1.0, 0.4, 0.4]]])
    pairs = selector_module.pair_features(geometry)
    assert pairs.shape == (1, 2, 2, selector_module.PAIR_FEATURES)
    torch.testing.assert_close(pairs[0, 0, 1, :2], torch.tensor([0.7, 0.1]))  # right of and below
    torch.testing.assert_close(pairs[0, 1, 0, :2], torch.tensor([-0.7, -0.1]))
    torch.testing.assert_close(pairs[0, 0, 1, 2], torch.tensor(0.5**0.5))
    assert pairs[0, 0, 1, 3] > 0 > pairs[0, 1, 0, 3]  # larger / smaller
    torch.testing.assert_close(pairs[0, 0, 0], torch.tensor([0.0, 0.0, 1e-6, 0.0, 0.0]), atol=1e-5, rtol=0)


def test_pairwise_geometry_lets_one_proposals_place_change_the_others_scores():
    selector = tiny_selector(query_tokens="all", pairwise_geometry=True)
    batch, geometry = inputs(), boxes()
    moved = geometry.clone()
    moved[:, 0, [0, 2]] += 0.3  # the first proposal moves right; features unchanged
    base, shifted = selector(**batch, proposal_geometry=geometry), selector(**batch, proposal_geometry=moved)
    assert not torch.allclose(base.iop[:, 1:], shifted.iop[:, 1:])
    permutation = torch.tensor([3, 0, 4, 1, 2])
    permuted = dict(batch, proposal_features=batch["proposal_features"][:, permutation])
    reordered = selector(**permuted, proposal_geometry=geometry[:, permutation])
    torch.testing.assert_close(reordered.iop, base.iop[:, permutation])  # still a set: order does not matter
    with pytest.raises(ValueError, match="needs proposal_geometry"):
        selector(**batch)


def test_pairwise_geometry_ignores_padded_proposals():
    selector = tiny_selector(query_tokens="all", pairwise_geometry=True)
    batch, geometry = inputs(batch=1, count=6), boxes(batch=1, count=6)
    batch["proposal_valid"][0, 4:] = False
    padded = selector(**batch, proposal_geometry=geometry)
    alone = selector(
        proposal_features=batch["proposal_features"][:, :4],
        proposal_valid=batch["proposal_valid"][:, :4],
        seg_hidden=batch["seg_hidden"],
        token_hidden=batch["token_hidden"],
        token_valid=batch["token_valid"],
        proposal_geometry=geometry[:, :4],
    )
    torch.testing.assert_close(padded.iop[:, :4], alone.iop)


def test_gradient_reaches_every_parameter():
    selector = tiny_selector(
        query_tokens="all", existence_head=True, key_positions=8, pairwise_geometry=True, input_mlp=True
    ).train()
    out = selector(**inputs(), proposal_geometry=boxes())
    (out.iop.sum() + out.similarity.sum() + out.existence_logit.sum()).backward()
    for name, parameter in selector.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_no_proposals_and_empty_samples_stay_finite():
    selector = tiny_selector(query_tokens="all", existence_head=True)
    none = inputs(count=0)
    out = selector(**none)
    assert out.iop.shape == (2, 0) and out.similarity.shape == (2, 0)
    assert torch.isfinite(out.existence_logit).all()
    batch = inputs()
    batch["proposal_valid"][1] = False  # a sample whose proposals are all padding
    out = selector(**batch)
    assert torch.isfinite(out.iop).all() and torch.isfinite(out.similarity).all()


def test_mismatched_batch_shapes_are_rejected():
    batch = inputs()
    batch["seg_hidden"] = batch["seg_hidden"][:1]
    with pytest.raises(ValueError, match="batch shapes disagree"):
        tiny_selector()(**batch)
