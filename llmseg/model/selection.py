"""Turning predicted scores into the set of proposals whose union is the answer mask.

The release unions every proposal with IoP > 0.5, so an empty selection (an empty mask) happens
by accident. The fallbacks make it a decision: always take the best proposal ("top1"), or take
it only when the existence head says there is a target ("existence"); ``existence_gate`` lets
that head veto any selection.
"""

from __future__ import annotations

import numpy as np

from llmseg.model.config import SelectionConfig


def select(
    iop: np.ndarray, similarity: np.ndarray, config: SelectionConfig, existence_prob: float | None = None
) -> np.ndarray:
    """K bool: which of the K proposals to union, from their (K,) IoP and similarity predictions."""
    iop, similarity = np.asarray(iop, dtype=np.float64), np.asarray(similarity, dtype=np.float64)
    if iop.ndim != 1 or iop.shape != similarity.shape:
        raise ValueError(f"iop {iop.shape} and similarity {similarity.shape} must be two vectors of one length")
    if config.top_k < 1:
        raise ValueError("selection.top_k must be at least 1")
    uses_existence = config.fallback == "existence" or config.existence_gate
    if uses_existence and existence_prob is None:
        raise ValueError("this selection config needs the existence probability: enable selector.existence_head")

    chosen = np.zeros(len(iop), dtype=bool)
    if len(iop) == 0:
        return chosen
    says_target = existence_prob is None or existence_prob >= config.existence_threshold
    if config.existence_gate and not says_target:
        return chosen

    best = int(np.argmax(similarity))
    above = iop > config.iop_threshold
    if config.rule == "threshold":
        chosen = above
    elif config.rule == "top1":
        chosen[best] = True
    elif config.rule == "top1_or_threshold":
        chosen = above.copy()
        chosen[best] = True
    elif config.rule == "threshold_in_topk":
        top_k = np.argsort(-similarity, kind="stable")[: config.top_k]
        chosen[top_k] = above[top_k]
    else:
        raise ValueError(f"unknown selection.rule {config.rule!r}")

    if not chosen.any() and (config.fallback == "top1" or (config.fallback == "existence" and says_target)):
        chosen[best] = True
    return chosen
