"""Selection rules and fallbacks on crafted scores, and the config fields they rely on."""

from __future__ import annotations

import numpy as np
import pytest

from llmseg.model.config import LLMSegConfig, ProposalConfig, SelectionConfig, SelectorConfig
from llmseg.model.selection import select

# proposal:        0     1     2     3
IOP = np.array([0.2, 0.7, 0.6, 0.1])
SIMILARITY = np.array([0.9, 0.1, 0.3, 0.5])  # ranking by similarity: 0, 3, 2, 1


def chosen(config: SelectionConfig, iop=IOP, similarity=SIMILARITY, existence_prob=None) -> list[int]:
    return np.flatnonzero(select(iop, similarity, config, existence_prob)).tolist()


@pytest.mark.parametrize(
    ("rule", "top_k", "expected"),
    [
        ("threshold", 5, [1, 2]),
        ("top1", 5, [0]),
        ("top1_or_threshold", 5, [0, 1, 2]),
        ("threshold_in_topk", 3, [2]),
        ("threshold_in_topk", 4, [1, 2]),
    ],
)
def test_rules(rule, top_k, expected):
    assert chosen(SelectionConfig(rule=rule, top_k=top_k)) == expected


def test_threshold_is_strict_and_configurable():
    assert chosen(SelectionConfig(iop_threshold=0.6)) == [1]
    assert chosen(SelectionConfig(iop_threshold=0.05)) == [0, 1, 2, 3]


LOW_IOP = np.array([0.2, 0.3, 0.1, 0.0])


@pytest.mark.parametrize(
    ("fallback", "existence_prob", "expected"),
    [("empty", None, []), ("top1", None, [0]), ("existence", 0.8, [0]), ("existence", 0.2, [])],
)
def test_fallbacks_when_the_rule_selects_nothing(fallback, existence_prob, expected):
    config = SelectionConfig(rule="threshold_in_topk", top_k=2, fallback=fallback)
    assert chosen(config, iop=LOW_IOP, existence_prob=existence_prob) == expected


def test_fallback_does_not_override_a_nonempty_selection():
    assert chosen(SelectionConfig(fallback="top1")) == [1, 2]


def test_existence_gate_vetoes_any_selection():
    gated = SelectionConfig(rule="top1_or_threshold", iop_threshold=0.9, existence_gate=True, existence_threshold=0.6)
    assert chosen(gated, existence_prob=0.59) == []
    assert chosen(gated, existence_prob=0.6) == [0]


def test_existence_probability_is_required_when_configured():
    with pytest.raises(ValueError, match="existence probability"):
        select(IOP, SIMILARITY, SelectionConfig(fallback="existence"))
    with pytest.raises(ValueError, match="existence probability"):
        select(IOP, SIMILARITY, SelectionConfig(existence_gate=True))


def test_no_proposals_and_bad_inputs():
    result = select(np.zeros(0), np.zeros(0), SelectionConfig(fallback="top1"))
    assert result.shape == (0,) and result.dtype == bool
    with pytest.raises(ValueError, match="two vectors of one length"):
        select(IOP, SIMILARITY[:3], SelectionConfig())
    with pytest.raises(ValueError, match="top_k"):
        select(IOP, SIMILARITY, SelectionConfig(rule="threshold_in_topk", top_k=0))


def test_config_fields_added_for_the_parts_are_validated():
    with pytest.raises(ValueError, match="existence_gate"):
        LLMSegConfig(selection=SelectionConfig(existence_gate=True))
    LLMSegConfig(selection=SelectionConfig(existence_gate=True), selector=SelectorConfig(existence_head=True))
    with pytest.raises(ValueError, match="color_tolerance"):
        LLMSegConfig(proposals=ProposalConfig(kind="color", color_tolerance=0))
    with pytest.raises(ValueError, match="min_region_area"):
        LLMSegConfig(proposals=ProposalConfig(kind="color", min_region_area=0))
