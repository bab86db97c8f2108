"""The selection module's inputs for every training question, computed once by frozen encoders.

With ``trainable="selector"`` the region encoder and the VLM do not change, so what they produce
for a question is the same at every step. Running them once per question and training the
selector on the stored outputs makes a ``shapes`` step about 7x cheaper (``bench/train_speed.py``),
so the part that picks proposals gets many more updates in the same time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from tqdm import tqdm

from llmseg.model.llmseg import FeatureBatch, LLMSeg, TrainingBatch

# Per question: tensors along its proposals, its query tokens, and single values.
_PROPOSAL_FIELDS = ("features", "geometry", "iou_target", "iop_target", "anchor_target")
_TOKEN_FIELDS = ("token_hidden", "token_valid")
_SCALAR_FIELDS = ("seg_hidden", "has_target")


class FeatureCache:
    """One entry per question, unpadded (its own proposal and token counts); ``batch`` pads."""

    def __init__(self, entries: list[dict[str, torch.Tensor | None]]) -> None:
        self.entries = entries

    @classmethod
    @torch.no_grad()
    def build(cls, model: LLMSeg, batches: Iterable[TrainingBatch], total: int) -> FeatureCache:
        """Encode ``batches`` (every question once, in index order) with ``model``'s frozen encoders."""
        if not model.encoders_frozen:
            raise ValueError("caching encoder outputs needs frozen encoders: call model.freeze_encoders() first")
        entries: list[dict[str, torch.Tensor | None]] = []
        with tqdm(total=total, desc="encoding questions", unit="question") as progress:
            for batch in batches:
                encoded, _ = model.encode(batch, with_loss=False)
                for row in range(encoded.proposal_valid.shape[0]):
                    entries.append(_entry(encoded, row))
                progress.update(encoded.proposal_valid.shape[0])
        if len(entries) != total:
            raise ValueError(f"encoded {len(entries)} questions, expected {total}")
        return cls(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def batch(self, indices: Sequence[int]) -> FeatureBatch:
        """The questions at ``indices`` padded to their largest proposal and token counts, as
        ``LLMSeg.prepare_batch`` pads (zeros, invalid)."""
        chosen = [self.entries[index] for index in indices]
        proposals = max(1, max(len(entry["features"]) for entry in chosen))
        tokens = max(len(entry["token_valid"]) for entry in chosen)
        fields: dict[str, torch.Tensor | None] = {}
        for name in _PROPOSAL_FIELDS:
            fields[name] = None if chosen[0][name] is None else _pad([entry[name] for entry in chosen], proposals)
        for name in _TOKEN_FIELDS:
            fields[name] = _pad([entry[name] for entry in chosen], tokens)
        for name in _SCALAR_FIELDS:
            fields[name] = torch.stack([entry[name] for entry in chosen])
        valid = _pad([torch.ones(len(entry["features"]), dtype=torch.bool) for entry in chosen], proposals)
        return FeatureBatch(proposal_valid=valid, **fields)


def _entry(encoded: FeatureBatch, row: int) -> dict[str, torch.Tensor | None]:
    """Row ``row`` of an encoded batch, cut to its own proposals and tokens (copies, so the batch's
    padded tensors are freed)."""
    count = int(encoded.proposal_valid[row].sum())
    if not bool(encoded.proposal_valid[row, :count].all()):
        raise ValueError("a batch's valid proposals must come first in each row (as prepare_batch builds them)")
    token_valid = encoded.token_valid[row].bool()
    length = int(token_valid.nonzero().max()) + 1 if token_valid.any() else 0
    entry: dict[str, torch.Tensor | None] = {}
    for name in _PROPOSAL_FIELDS:
        value = getattr(encoded, name)
        entry[name] = None if value is None else value[row, :count].detach().cpu().clone()
    entry["token_hidden"] = encoded.token_hidden[row, :length].detach().cpu().clone()
    entry["token_valid"] = token_valid[:length].cpu().clone()
    entry["seg_hidden"] = encoded.seg_hidden[row].detach().cpu().clone()
    entry["has_target"] = encoded.has_target[row].cpu().clone()
    return entry


def _pad(tensors: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    """Stack along a new first axis, zero-padding each tensor's first axis to ``length``."""
    first = tensors[0]
    out = first.new_zeros((len(tensors), length, *first.shape[1:]))
    for row, tensor in enumerate(tensors):
        out[row, : len(tensor)] = tensor
    return out
