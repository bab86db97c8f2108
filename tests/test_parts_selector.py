"""Selector: shapes, release parameter layout, equivalence to segment-anything's block, padding, gradients."""

from __future__ import annotations

import re

import pytest
import torch
from segment_anything.modeling.transformer import TwoWayAttentionBlock

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
    with pytest.raises(ValueError, match="needs token_hidden"):
        every_token(batch["proposal_features"], batch["proposal_valid"], batch["seg_hidden"])


def test_gradient_reaches_every_parameter():
    selector = tiny_selector(query_tokens="all", existence_head=True).train()
    out = selector(**inputs())
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
