"""Region features: one vector per proposal mask, pooled from a DINOv2 feature map.

Data flow (the release's): image (long side -> S, normalised, zero-padded to S x S) -> DINOv2
patch tokens (S/14 x S/14) -> 1x1 conv to the fusion width -> bilinear upsample to f x f ->
weighted average under each proposal's soft mask (padded square and resized to f x f the same
way). Two options outside the release keep information that averaging washes out: a 2-D
sinusoidal position encoding added to the map before pooling ("where"), and an embedding of the
mask's own shape ("what outline").
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn
from torchvision.ops import roi_align
from transformers import Dinov2Config, Dinov2Model

from llmseg.model.config import RegionEncoderConfig
from llmseg.model.proposals import check_rgb_image

_MASK_CHUNK_PIXELS = 2**24  # float pixels resized at once (64 MB): bounds memory for large masks


def official_position_embeddings(position_embeddings: torch.Tensor, grid: int) -> torch.Tensor:
    """DINOv2's (1, 1 + M*M, D) position table resized to a grid x grid patch grid as the release did.

    The release ran torch.hub DINOv2, which interpolates bicubically with scale factor
    (grid + 0.1) / M in fp32 without antialiasing; transformers resizes to an exact size instead,
    which gives slightly different embeddings.
    """
    source = math.isqrt(position_embeddings.shape[1] - 1)
    if source * source != position_embeddings.shape[1] - 1:
        raise ValueError(f"the position table has {position_embeddings.shape[1] - 1} patch entries, not a square grid")
    dim = position_embeddings.shape[-1]
    table = position_embeddings.float()
    patches = table[:, 1:].reshape(1, source, source, dim).permute(0, 3, 1, 2)
    scale = (grid + 0.1) / source
    patches = F.interpolate(patches, scale_factor=(scale, scale), mode="bicubic", align_corners=False, antialias=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([table[:, :1], patches], dim=1).to(position_embeddings.dtype)


def use_official_position_grid(backbone: Dinov2Model, image_size: int) -> None:
    """Store the release's position grid for ``image_size`` inputs, so no interpolation runs later."""
    embeddings = backbone.embeddings
    grid = image_size // backbone.config.patch_size
    if embeddings.position_embeddings.shape[1] == grid * grid + 1:
        return
    table = official_position_embeddings(embeddings.position_embeddings.detach(), grid)
    embeddings.position_embeddings = nn.Parameter(table, requires_grad=embeddings.position_embeddings.requires_grad)
    embeddings.patch_embeddings.image_size = (image_size, image_size)
    embeddings.patch_embeddings.num_patches = grid * grid
    backbone.config.image_size = image_size


def sinusoidal_position_encoding(channels: int, size: int) -> torch.Tensor:
    """(channels, size, size) fixed 2-D encoding: half the channels encode y, half x.

    Frequencies run geometrically from one cycle per map side (coarse: survives averaging over a
    large region) to size/4 cycles (fine: locates small regions).
    """
    quarter = channels // 4
    coordinates = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    frequencies = torch.logspace(0.0, math.log10(max(size / 4, 1.0)), quarter)
    angles = 2 * math.pi * coordinates[:, None] * frequencies[None, :]
    axis = torch.cat([angles.sin(), angles.cos()], dim=1)  # (size, channels / 2)
    rows = axis[:, None, :].expand(size, size, -1)
    cols = axis[None, :, :].expand(size, size, -1)
    return torch.cat([rows, cols], dim=2).permute(2, 0, 1).contiguous()


def mask_shape_crops(masks: torch.Tensor, crop_size: int) -> torch.Tensor:
    """(N, f, f) soft masks -> (N, crop_size, crop_size): each mask cropped to its own box and resized.

    The box covers the pixels at or above half the mask's peak value; an empty mask gives zeros.
    """
    count, height, width = masks.shape
    if count == 0:
        return masks.new_zeros(0, crop_size, crop_size)
    peak = masks.amax(dim=(1, 2), keepdim=True)
    inside = (masks >= 0.5 * peak) & (peak > 0)
    rows, cols = inside.any(dim=2), inside.any(dim=1)
    row_index = torch.arange(height, device=masks.device)
    col_index = torch.arange(width, device=masks.device)
    top = torch.where(rows, row_index, height).amin(dim=1)
    bottom = torch.where(rows, row_index, -1).amax(dim=1) + 1
    left = torch.where(cols, col_index, width).amin(dim=1)
    right = torch.where(cols, col_index, -1).amax(dim=1) + 1
    empty = bottom <= top
    boxes = torch.stack([left, top, right, bottom], dim=1).float()
    boxes[empty] = torch.tensor([0.0, 0.0, float(width), float(height)], device=masks.device)
    indexed = torch.cat([torch.arange(count, device=masks.device, dtype=boxes.dtype)[:, None], boxes], dim=1)
    crops = roi_align(masks[:, None].float(), indexed, output_size=crop_size, aligned=True)
    return crops[:, 0].to(masks.dtype)


def mask_geometry(masks: torch.Tensor) -> torch.Tensor:
    """(N, f, f) soft masks -> (N, 5): box (left, top, right, bottom) and sqrt(area), as fractions of f.

    The box is that of the pixels above one half; an empty mask gives zeros.
    """
    count, height, width = masks.shape
    solid = masks > 0.5
    rows, cols = solid.any(dim=2), solid.any(dim=1)
    row_index = torch.arange(height, device=masks.device)[None].expand(count, -1)
    col_index = torch.arange(width, device=masks.device)[None].expand(count, -1)
    top = torch.where(rows, row_index, height).amin(dim=1)
    bottom = torch.where(rows, row_index, -1).amax(dim=1) + 1
    left = torch.where(cols, col_index, width).amin(dim=1)
    right = torch.where(cols, col_index, -1).amax(dim=1) + 1
    box = torch.stack([left / width, top / height, right / width, bottom / height], dim=1).float()
    box[~rows.any(dim=1)] = 0.0
    area = masks.float().sum(dim=(1, 2)) / (height * width)
    return torch.cat([box, area.sqrt()[:, None]], dim=1)


def proposal_geometry(masks: torch.Tensor) -> torch.Tensor:
    """(B, K, f, f) prepared soft masks -> (B, K, 5) boxes and sqrt areas (``mask_geometry`` per proposal)."""
    return mask_geometry(masks.flatten(0, 1)).view(*masks.shape[:2], 5)


class RegionEncoder(nn.Module):
    """DINOv2 feature map + per-proposal mask pooling (``conv`` is the release's ``lisa_dino_conv``)."""

    def __init__(self, config: RegionEncoderConfig, *, backbone: Dinov2Model) -> None:
        super().__init__()
        patch_size = backbone.config.patch_size
        if config.image_size % patch_size:
            raise ValueError(
                f"region_encoder.image_size {config.image_size} must be a multiple of patch size {patch_size}"
            )
        if config.positional_encoding and config.out_dim % 4:
            raise ValueError("region_encoder.out_dim must be divisible by 4 for the 2-D positional encoding")
        self.config = config
        self.backbone = backbone
        if config.position_interpolation == "official":
            use_official_position_grid(backbone, config.image_size)
        self.backbone.requires_grad_(config.trainable_backbone)
        self.conv = nn.Conv2d(backbone.config.hidden_size, config.out_dim, kernel_size=1)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(3, 1, 1), persistent=False)
        position = (
            sinusoidal_position_encoding(config.out_dim, config.feature_size) if config.positional_encoding else None
        )
        self.register_buffer("position_encoding", position, persistent=False)
        self.shape_embedding = (
            nn.Sequential(
                nn.Linear(config.shape_embedding_size**2, config.out_dim),
                nn.ReLU(),
                nn.Linear(config.out_dim, config.out_dim),
            )
            if config.shape_embedding_size > 0
            else None
        )
        self.color_projection = nn.Conv2d(3, config.out_dim, kernel_size=1) if config.color_features else None
        self.box_embedding = (
            nn.Sequential(nn.Linear(5, config.out_dim), nn.ReLU(), nn.Linear(config.out_dim, config.out_dim))
            if config.box_embedding
            else None
        )

    @classmethod
    def from_config(cls, config: RegionEncoderConfig) -> RegionEncoder:
        """Pretrained DINOv2 from ``config.dinov2`` (Hub id or path), or a fresh one from ``config.dinov2_config``."""
        if config.dinov2 is not None:
            try:
                backbone = Dinov2Model.from_pretrained(config.dinov2)
            except OSError as error:
                raise ValueError(
                    f"could not load DINOv2 from {config.dinov2!r} ({str(error).splitlines()[0]}): download "
                    "facebook/dinov2-large to a folder and set region_encoder.dinov2 to it, or use the `tiny` "
                    "or `shapes` preset"
                ) from None
        elif config.dinov2_config is not None:
            backbone = Dinov2Model(Dinov2Config(**config.dinov2_config))
        else:
            raise ValueError("set region_encoder.dinov2 (a Hub id or folder) or region_encoder.dinov2_config")
        return cls(config, backbone=backbone)

    def train(self, mode: bool = True) -> RegionEncoder:
        """A frozen backbone stays in eval mode, so training never changes what it computes."""
        super().train(mode)
        if not self.config.trainable_backbone:
            self.backbone.eval()
        return self

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """HWC uint8 RGB -> (3, S, S) float: long side resized to S (bilinear), normalised, zero-padded bottom/right."""
        size = self.config.image_size
        resized = ResizeLongestSide(size).apply_image(check_rgb_image(image))
        pixels = torch.from_numpy(resized).to(self.pixel_mean.device).permute(2, 0, 1).float()
        pixels = (pixels - self.pixel_mean) / self.pixel_std
        return F.pad(pixels, (0, size - pixels.shape[2], 0, size - pixels.shape[1]))

    def prepare_masks(self, masks: np.ndarray) -> torch.Tensor:
        """K x H x W bool -> (K, f, f) soft masks: padded square bottom/right like the image, resized (antialiased)."""
        if masks.ndim != 3:
            raise ValueError(f"expected K x H x W masks, got shape {masks.shape}")
        count, height, width = masks.shape
        side, size = max(height, width), self.config.feature_size
        prepared = torch.zeros(count, size, size, device=self.pixel_mean.device)
        step = max(1, _MASK_CHUNK_PIXELS // (side * side))
        for start in range(0, count, step):
            chunk = torch.from_numpy(masks[start : start + step]).to(prepared.device).float()
            chunk = F.pad(chunk, (0, side - width, 0, side - height))[:, None]
            resized = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            prepared[start : start + step] = resized[:, 0]
        return prepared

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images -> (B, D, f, f) features to pool from (cacheable per image)."""
        size = self.config.image_size
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != (3, size, size):
            raise ValueError(f"expected pixel values of shape (B, 3, {size}, {size}), got {tuple(pixel_values.shape)}")
        grid = size // self.backbone.config.patch_size
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.trainable_backbone):
            tokens = self.backbone(pixel_values=pixel_values).last_hidden_state[:, 1:]
        tokens = tokens.to(self.conv.weight.dtype).transpose(1, 2)
        features = self.conv(tokens.reshape(len(pixel_values), -1, grid, grid))
        side = self.config.feature_size
        features = F.interpolate(features.float(), size=(side, side), mode="bilinear", align_corners=False)
        features = features.to(self.conv.weight.dtype)
        if self.position_encoding is not None:
            features = features + self.position_encoding
        if self.color_projection is not None:
            colors = F.adaptive_avg_pool2d(pixel_values.float(), side).to(self.color_projection.weight.dtype)
            features = features + self.color_projection(colors)
        return features

    def pool(
        self, feature_map: torch.Tensor, masks: torch.Tensor, geometry: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, D, f, f) features, (B, K, f, f) soft masks -> (B, K, D) mask-weighted averages.

        An empty mask pools to zeros (plus its shape embedding when enabled). geometry: the masks'
        ``proposal_geometry`` (B, K, 5) when the caller has it already (the box embedding reads it).
        """
        if masks.ndim != 4 or masks.shape[0] != feature_map.shape[0] or masks.shape[2:] != feature_map.shape[2:]:
            raise ValueError(f"masks {tuple(masks.shape)} do not match the feature map {tuple(feature_map.shape)}")
        weights = masks.to(feature_map.dtype)
        totals = torch.einsum("bkhw,bdhw->bkd", weights, feature_map)
        pooled = totals / (weights.sum(dim=(2, 3))[..., None] + 1e-8)
        if self.shape_embedding is not None:
            crops = mask_shape_crops(weights.flatten(0, 1), self.config.shape_embedding_size)
            shapes = self.shape_embedding(crops.flatten(1).to(self.shape_embedding[0].weight.dtype))
            pooled = pooled + shapes.view(*weights.shape[:2], -1).to(pooled.dtype)
        if self.box_embedding is not None:
            boxes = (geometry if geometry is not None else proposal_geometry(masks)).to(
                self.box_embedding[0].weight.dtype
            )
            pooled = pooled + self.box_embedding(boxes).to(pooled.dtype)
        return pooled

    def forward(
        self, pixel_values: torch.Tensor, masks: torch.Tensor, geometry: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, 3, S, S), (B, K, f, f) [, (B, K, 5)] -> (B, K, D)."""
        return self.pool(self.feature_map(pixel_values), masks, geometry)
