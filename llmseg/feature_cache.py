"""The selection module's inputs for every training question, computed once by frozen encoders.

With ``trainable="selector"`` the region encoder and the VLM do not change, so what they produce
for a question is the same at every step. Running them once per question and training the
selector on the stored outputs makes a ``shapes`` step about 7x cheaper (``bench/train_speed.py``),
so the part that picks proposals gets many more updates in the same time.

The outputs are also kept on disk, beside the prepared proposals, under a fingerprint of everything
they depend on (the encoders' weights and config, the bytes of the data they read, the encoding
batch size): a resumed run, or a second selector run on the same encoders (a sweep), reads them
back, bit for bit, instead of encoding the questions again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets
import torch
from tqdm import tqdm

from llmseg.model.llmseg import FeatureBatch, LLMSeg, TrainingBatch

# Per question: tensors along its proposals, its query tokens, and single values.
_PROPOSAL_FIELDS = ("features", "geometry", "iou_target", "iop_target", "anchor_target")
_TOKEN_FIELDS = ("token_hidden", "token_valid")
_SCALAR_FIELDS = ("seg_hidden", "has_target")
_ENCODERS = ("region_encoder.", "vlm.")
_READ_CHUNK = 1 << 24

logger = logging.getLogger(__name__)


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

    def save(self, path: Path, fingerprint: str) -> None:
        """Write the entries with their fingerprint; atomic, so a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save({"fingerprint": fingerprint, "entries": self.entries}, partial)
        partial.replace(path)

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> FeatureCache | None:
        """The cache at ``path`` if it was written for ``fingerprint``; None when it is missing, for
        other encoders or data, or unreadable (the caller encodes again and overwrites it)."""
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, weights_only=True)
        except Exception as error:  # a damaged file raises anything from KeyError to struct.error
            logger.warning("ignoring the unreadable feature cache %s (%s): encoding again", path, error)
            return None
        if not isinstance(stored, dict) or stored.get("fingerprint") != fingerprint:
            return None
        return cls(stored["entries"])

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


def fingerprint(model: LLMSeg, data: Sequence[datasets.Dataset | None], batch_size: int) -> str | None:
    """What the encoders' outputs for ``data`` depend on, hashed: their weights and the model config,
    the bytes of every dataset's files, and the batch size (padding can move the last bit of a
    float). None when a dataset lives in memory only, with no file to hash: then nothing is kept."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    digest.update(str(batch_size).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(_ENCODERS):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    for dataset in data:
        if dataset is None:
            digest.update(b"none")
            continue
        files = [entry["filename"] for entry in dataset.cache_files]
        if not files:
            return None
        if "id" in dataset.column_names:  # the rows read, which a .select() of the same files changes
            digest.update("\n".join(dataset["id"]).encode())
        for filename in files:
            with open(filename, "rb") as handle:
                while chunk := handle.read(_READ_CHUNK):
                    digest.update(chunk)
    return digest.hexdigest()
