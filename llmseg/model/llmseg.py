"""LLM-Seg: proposals -> region features -> VLM ``<SEG>`` state -> selection module -> mask.

``LLMSeg`` holds the five stages and computes the training loss; inference with caching and
timings lives in ``llmseg.pipeline.Segmenter``, which calls the same stages.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from llmseg.model import checkpoint
from llmseg.model.config import LLMSegConfig
from llmseg.model.losses import (
    alignment_loss,
    anchor_loss,
    anchor_targets,
    existence_loss,
    iop_loss,
    overlap_targets,
)
from llmseg.model.proposals import ProposalGenerator, build_proposal_generator
from llmseg.model.region_encoder import RegionEncoder, proposal_geometry
from llmseg.model.selector import Selector, SelectorOutput
from llmseg.model.vlm import VLM, VLMOutput, is_sentence


@dataclass
class TrainingBatch:
    """B questions with their proposals and targets, ready for ``LLMSeg.forward``.

    images: B HWC uint8 RGB arrays (the VLM's input). queries: B strings. sentences: B bools
    (long or short question template). region_pixels: (B, 3, S, S) region-encoder input.
    proposal_masks: (B, K, f, f) float soft masks at the feature-map size, zero past each
    sample's proposals. proposal_valid: (B, K) bool. iou_target, iop_target: (B, K) float.
    has_target: (B,) bool, False for "no target" questions. anchor_target: (B, K) float, each
    proposal's IoU with the question's anchor objects, when the batch was given anchor masks.
    """

    images: list[np.ndarray]
    queries: list[str]
    sentences: list[bool]
    region_pixels: torch.Tensor
    proposal_masks: torch.Tensor
    proposal_valid: torch.Tensor
    iou_target: torch.Tensor
    iop_target: torch.Tensor
    has_target: torch.Tensor
    anchor_target: torch.Tensor | None = None

    def to(self, device: str | torch.device) -> TrainingBatch:
        return _tensors_to(self, device)


@dataclass
class FeatureBatch:
    """B questions as the selection module reads them: the region encoder's and the VLM's outputs,
    with the training targets. Training the selector alone (``trainable="selector"``) computes these
    once per question (``llmseg.feature_cache``) instead of running both encoders every step.

    features: (B, K, D) pooled proposal features. proposal_valid: (B, K) bool. geometry: (B, K, 5)
    boxes or None (``LLMSeg.proposal_boxes``). seg_hidden, token_hidden, token_valid: as in
    ``VLMOutput``. The targets are ``TrainingBatch``'s.
    """

    features: torch.Tensor
    proposal_valid: torch.Tensor
    geometry: torch.Tensor | None
    seg_hidden: torch.Tensor
    token_hidden: torch.Tensor
    token_valid: torch.Tensor
    iou_target: torch.Tensor
    iop_target: torch.Tensor
    has_target: torch.Tensor
    anchor_target: torch.Tensor | None = None

    def to(self, device: str | torch.device) -> FeatureBatch:
        return _tensors_to(self, device)


_Batch = TypeVar("_Batch", TrainingBatch, FeatureBatch)


def _tensors_to(batch: _Batch, device: str | torch.device) -> _Batch:
    """A copy of ``batch`` with its tensor fields on ``device``; the others (images, text, None) are shared."""
    fields = {field.name: getattr(batch, field.name) for field in dataclasses.fields(batch)}
    return dataclasses.replace(
        batch, **{name: value.to(device) for name, value in fields.items() if isinstance(value, torch.Tensor)}
    )


@dataclass
class LLMSegOutput:
    """loss: weighted sum of ``losses`` (keys "ce", "align", "iop", and "existence" when the head
    exists, "anchor" when the batch has anchor masks). iop, similarity: (B, K). existence_logit:
    (B,) or None."""

    loss: torch.Tensor
    losses: dict[str, torch.Tensor]
    iop: torch.Tensor
    similarity: torch.Tensor
    existence_logit: torch.Tensor | None


class LLMSeg(nn.Module):
    """The whole model; sub-models are built by ``from_config`` and passed in, as in segment-anything."""

    def __init__(
        self,
        *,
        config: LLMSegConfig,
        vlm: VLM,
        region_encoder: RegionEncoder,
        selector: Selector,
        proposal_generator: ProposalGenerator,
    ) -> None:
        super().__init__()
        self.config = config
        self.vlm = vlm
        self.region_encoder = region_encoder
        self.selector = selector
        self.proposal_generator = proposal_generator  # not an nn.Module: SAM stays frozen and outside the graph
        self.encoders_frozen = False

    @classmethod
    def from_config(cls, config: LLMSegConfig, device: str | torch.device = "cpu") -> LLMSeg:
        """Build every stage: pretrained parts from their ids/paths, the rest freshly initialised."""
        vlm = VLM.from_config(config.vlm, device)
        region_encoder = RegionEncoder.from_config(config.region_encoder).to(device)
        selector = Selector(config.selector, hidden_size=vlm.hidden_size).to(device)
        proposal_generator = build_proposal_generator(config.proposals, device=str(device))
        return cls(
            config=config,
            vlm=vlm,
            region_encoder=region_encoder,
            selector=selector,
            proposal_generator=proposal_generator,
        )

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LLMSeg:
        """A model from a checkpoint folder, a preset name (``tiny``, ``shapes``, ...) or a Hub model id."""
        config, directory = checkpoint.resolve(name_or_path)
        model = cls.from_config(config, device)
        if directory is not None:
            checkpoint.load_weights(model, directory)
        return model.eval()

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write config.json and the trained weights (frozen pretrained bases are referenced, not copied)."""
        return checkpoint.save(self, directory)

    def freeze_encoders(self) -> None:
        """Train the selection module alone: the region encoder and the VLM get no gradients and stay
        in eval mode through later ``train()`` calls, so their outputs are fixed and can be cached."""
        for module in (self.region_encoder, self.vlm):
            module.requires_grad_(False)
            module.eval()
        self.encoders_frozen = True

    def train(self, mode: bool = True) -> LLMSeg:
        super().train(mode)
        if self.encoders_frozen:
            self.region_encoder.eval()
            self.vlm.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.selector.iop_head[0].weight.device

    def prepare_batch(
        self,
        images: Sequence[np.ndarray],
        queries: Sequence[str],
        proposals: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        *,
        ignores: Sequence[np.ndarray | None] | None = None,
        sentences: Sequence[bool] | None = None,
        anchors: Sequence[list[np.ndarray]] | None = None,
    ) -> TrainingBatch:
        """Collate B samples: HWC uint8 RGB images, K_i x H x W bool proposals, H x W bool targets.

        IoU/IoP targets are measured at the image's resolution (ignore pixels left out); masks are
        then padded to the batch's largest K and prepared at the feature-map size. ``anchors``
        gives each question's anchor object masks (an empty list for none), for the anchor loss.
        """
        count = len(images)
        if not (len(queries) == len(proposals) == len(targets) == count) or count == 0:
            raise ValueError("need the same positive number of images, queries, proposals and targets")
        ignores = list(ignores) if ignores is not None else [None] * count
        width = max(1, max(len(masks) for masks in proposals))
        side = self.config.region_encoder.feature_size
        device = self.device
        masks = torch.zeros(count, width, side, side, device=device)
        valid = torch.zeros(count, width, dtype=torch.bool, device=device)
        iou = torch.zeros(count, width, device=device)
        iop = torch.zeros(count, width, device=device)
        if anchors is not None and len(anchors) != count:
            raise ValueError(f"need one list of anchor masks per sample: {len(anchors)} for {count} samples")
        anchor = torch.zeros(count, width, device=device) if anchors is not None else None
        for row, (sample_masks, target, ignore) in enumerate(zip(proposals, targets, ignores, strict=True)):
            k = len(sample_masks)
            if k:
                masks[row, :k] = self.region_encoder.prepare_masks(sample_masks).to(device)
                sample_iou, sample_iop = overlap_targets(sample_masks, target, ignore)
                iou[row, :k] = torch.from_numpy(sample_iou)
                iop[row, :k] = torch.from_numpy(sample_iop)
                valid[row, :k] = True
                if anchor is not None:
                    anchor[row, :k] = torch.from_numpy(anchor_targets(sample_masks, anchors[row]))
        pixels = torch.stack([self.region_encoder.preprocess(image) for image in images]).to(device)
        return TrainingBatch(
            images=list(images),
            queries=list(queries),
            sentences=list(sentences) if sentences is not None else [is_sentence(q) for q in queries],
            region_pixels=pixels,
            proposal_masks=masks,
            proposal_valid=valid,
            iou_target=iou,
            iop_target=iop,
            has_target=torch.tensor([bool(np.any(t)) for t in targets], device=device),
            anchor_target=anchor,
        )

    def encode(self, batch: TrainingBatch, *, with_loss: bool) -> tuple[FeatureBatch, torch.Tensor | None]:
        """Run the region encoder and the VLM: the selection module's inputs, and the VLM's answer CE
        when ``with_loss``."""
        batch = batch.to(self.device)
        geometry = self.proposal_boxes(batch.proposal_masks)
        features = self.region_encoder(batch.region_pixels, batch.proposal_masks, geometry)
        vlm_out = self.vlm.encode(batch.images, batch.queries, sentences=batch.sentences, with_loss=with_loss)
        encoded = FeatureBatch(
            features=features,
            proposal_valid=batch.proposal_valid,
            geometry=geometry,
            seg_hidden=vlm_out.seg_hidden,
            token_hidden=vlm_out.token_hidden,
            token_valid=vlm_out.token_valid,
            iou_target=batch.iou_target,
            iop_target=batch.iop_target,
            has_target=batch.has_target,
            anchor_target=batch.anchor_target,
        )
        return encoded, vlm_out.lm_loss

    def forward(self, batch: TrainingBatch | FeatureBatch) -> LLMSegOutput:
        """Scores and the weighted training loss (CE + alignment + IoP [+ existence, anchor]) of one
        batch; a ``FeatureBatch`` (encoders already run) has no CE term."""
        lm_loss = None
        if isinstance(batch, TrainingBatch):
            batch, lm_loss = self.encode(batch, with_loss=True)
        else:
            batch = batch.to(self.device)
        text = VLMOutput(batch.seg_hidden, batch.token_hidden, batch.token_valid, lm_loss=None)
        scores = self.score(batch.features, batch.proposal_valid, text, batch.geometry)
        weights = self.config.losses
        # Alignment ranks proposals by overlap with the target: undefined when there is no target.
        aligned = batch.proposal_valid & batch.has_target[:, None]
        losses = {
            "align": alignment_loss(scores.similarity, batch.iou_target, aligned, weights.align_temperature),
            "iop": iop_loss(scores.iop, batch.iop_target, batch.proposal_valid),
        }
        total = weights.align_weight * losses["align"] + weights.iop_weight * losses["iop"]
        if lm_loss is not None:
            losses["ce"] = lm_loss
            total = total + weights.ce_weight * losses["ce"]
        if scores.existence_logit is not None:
            losses["existence"] = existence_loss(scores.existence_logit, batch.has_target)
            total = total + weights.existence_weight * losses["existence"]
        # Only batches given anchor masks (training, with --anchors) have the anchor loss.
        if weights.anchor_weight > 0 and batch.anchor_target is not None and scores.anchor_logit is not None:
            losses["anchor"] = anchor_loss(scores.anchor_logit, batch.anchor_target, batch.proposal_valid)
            total = total + weights.anchor_weight * losses["anchor"]
        return LLMSegOutput(
            loss=total,
            losses=losses,
            iop=scores.iop,
            similarity=scores.similarity,
            existence_logit=scores.existence_logit,
        )

    def proposal_boxes(self, masks: torch.Tensor) -> torch.Tensor | None:
        """(B, K, 5) boxes of the (B, K, f, f) prepared masks, measured once for the stages that read
        them (box embedding, pairwise geometry); None when no stage of this config does."""
        if self.config.region_encoder.box_embedding or self.config.selector.pairwise_geometry:
            return proposal_geometry(masks)
        return None

    def score(
        self, features: torch.Tensor, valid: torch.Tensor, vlm_out: VLMOutput, geometry: torch.Tensor | None = None
    ) -> SelectorOutput:
        """Selection-module scores from pooled proposal features (B, K, D) and the VLM's output;
        geometry (B, K, 5) comes from ``proposal_boxes`` of the same masks."""
        return self.selector(
            features.float(),
            valid,
            vlm_out.seg_hidden.float(),
            vlm_out.token_hidden.float(),
            vlm_out.token_valid,
            geometry,
        )
