"""Candidate masks for an image: SAM "everything" mode, or colour regions for the ``shapes`` world.

Both generators take an HWC uint8 RGB image and return ``Proposals`` at the image's own size,
so the rest of the model never needs to know which one ran.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
from scipy import ndimage
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam

from llmseg.model.config import ProposalConfig
from llmseg.model.sam import load_sam

_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)
_BIN_SHIFT = 3  # colour lookup bins of 8 levels per channel
_LOCAL_WINDOW = 5  # pixels; small enough to see the stripe of a textured background an edge sits on


def _local_mean(pixels: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HxWx3 mean colour of the ``where`` pixels in a window around each pixel, and where any exists."""
    weight = ndimage.uniform_filter(where.astype(np.float32), _LOCAL_WINDOW)
    totals = np.stack([ndimage.uniform_filter(pixels[..., c] * where, _LOCAL_WINDOW) for c in range(3)], axis=-1)
    present = weight > 1e-6
    return totals / np.where(present, weight, 1.0)[..., None], present


@dataclass
class Proposals:
    """Candidate masks of one image.

    masks: K x H x W bool, at the input image's size. scores: K float32 (SAM's predicted IoU;
    1.0 for the colour generator).
    """

    masks: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.masks.ndim != 3 or self.masks.dtype != np.bool_:
            raise ValueError(
                f"proposal masks must be a K x H x W bool array, got {self.masks.dtype} {self.masks.shape}"
            )
        if self.scores.shape != (len(self.masks),):
            raise ValueError(f"need one score per proposal mask: {len(self.masks)} masks, scores {self.scores.shape}")

    def __len__(self) -> int:
        return len(self.masks)

    @classmethod
    def empty(cls, height: int, width: int) -> Proposals:
        return cls(np.zeros((0, height, width), dtype=bool), np.zeros(0, dtype=np.float32))


class ProposalGenerator(Protocol):
    def __call__(self, image: np.ndarray) -> Proposals:
        """HWC uint8 RGB image -> proposals at the image's size."""
        ...


def check_rgb_image(image: Any) -> np.ndarray:
    """Reject anything that is not an HWC uint8 RGB array, saying what was given."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an HWC uint8 RGB numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HWC uint8 RGB array, got {image.dtype} of shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"the image is empty (shape {image.shape})")
    return image


def shrink_long_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (never enlarge) so that the long side is at most ``max_side``, with INTER_AREA as the release."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxW bool mask -> height x width bool mask (bilinear, then a 0.5 cut so edges stay smooth)."""
    if mask.shape == (height, width):
        return mask.astype(bool, copy=False)
    resized = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return resized > 0.5


def rank_records(records: list[dict[str, Any]], rank_by: str, limit: int) -> list[dict[str, Any]]:
    """Best ``limit`` SamAutomaticMaskGenerator records: by predicted IoU ("score") or by area ("area")."""
    key = {"score": "predicted_iou", "area": "area"}[rank_by]
    return sorted(records, key=lambda record: record[key], reverse=True)[:limit]


class SamProposalGenerator:
    """SAM "everything" mode with the release's settings, on the image shrunk to ``max_side``.

    The release kept the 50 largest masks; ``rank_by="score"`` keeps the 50 SAM is surest of
    (after the generator's NMS), which keeps small targets that "largest" drops.
    """

    def __init__(self, sam: Sam, config: ProposalConfig) -> None:
        if config.max_proposals < 1:
            raise ValueError("proposals.max_proposals must be at least 1")
        self.config = config
        self.mask_generator = SamAutomaticMaskGenerator(
            sam,
            points_per_side=config.points_per_side,
            pred_iou_thresh=config.pred_iou_thresh,
            stability_score_thresh=config.stability_score_thresh,
            box_nms_thresh=config.box_nms_thresh,
            output_mode="binary_mask",
        )

    def __call__(self, image: np.ndarray) -> Proposals:
        height, width = check_rgb_image(image).shape[:2]
        records = self.mask_generator.generate(shrink_long_side(image, self.config.max_side))
        records = rank_records(records, self.config.rank_by, self.config.max_proposals)
        if not records:
            return Proposals.empty(height, width)
        masks = np.stack([resize_mask(record["segmentation"], height, width) for record in records])
        scores = np.array([record["predicted_iou"] for record in records], dtype=np.float32)
        return Proposals(masks, scores)


class ColorProposalGenerator:
    """Weight-free proposals for the synthetic ``shapes`` world.

    Objects there are flat palette colours on a low-saturation background, and two objects of one
    colour never touch, so each connected region of one palette colour is one object's visible
    mask. Distractors (two touching regions joined, all regions of one colour joined, half of a
    large region) make the selection model tell a whole object from its parts and neighbours,
    as it must with SAM's overlapping proposals.
    """

    def __init__(
        self,
        palette: Mapping[str, Sequence[int]],
        *,
        max_proposals: int = 50,
        color_tolerance: float = 60.0,
        min_region_area: int = 16,
    ) -> None:
        if not palette:
            raise ValueError("the colour palette is empty; pass name -> (R, G, B) entries")
        if max_proposals < 1:
            raise ValueError("proposals.max_proposals must be at least 1")
        self.colors = np.array([tuple(rgb) for rgb in palette.values()], dtype=np.float32)
        if self.colors.shape[1:] != (3,):
            raise ValueError("every palette entry must be an (R, G, B) triple")
        self.max_proposals = max_proposals
        self.color_tolerance = color_tolerance
        self.min_region_area = min_region_area
        self._table = self._nearest_color_table()

    def __call__(self, image: np.ndarray) -> Proposals:
        height, width = check_rgb_image(image).shape[:2]
        regions = sorted(self._regions(image), key=lambda region: int(region[1].sum()), reverse=True)
        regions = regions[: self.max_proposals]
        masks = [mask for _, mask in regions]
        masks += self._distractors(regions)[: self.max_proposals - len(masks)]
        if not masks:
            return Proposals.empty(height, width)
        # Order by area so that the position in the list does not say "real object" or "distractor".
        stacked = np.stack(masks)
        stacked = stacked[np.argsort(-stacked.sum(axis=(1, 2)), kind="stable")]
        return Proposals(stacked, np.ones(len(stacked), dtype=np.float32))

    def quantize(self, image: np.ndarray) -> np.ndarray:
        """HxW int: index of the nearest palette colour, -1 where none is within ``color_tolerance``.

        Looked up in a table over 8x8x8 RGB bins (built once): the bin error, at most 7 per channel,
        is far below the tolerance and the palette's spacing, and the lookup is ~50x faster than
        measuring every pixel's distance to every colour.
        """
        bins = image >> _BIN_SHIFT
        return self._table[bins[..., 0], bins[..., 1], bins[..., 2]]

    def _nearest_color_table(self) -> np.ndarray:
        """Label of each RGB bin's centre: nearest palette index, -1 beyond ``color_tolerance``."""
        centres = (np.arange(256 >> _BIN_SHIFT, dtype=np.float32) + 0.5) * (1 << _BIN_SHIFT)
        grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), axis=-1).reshape(-1, 3)
        squared = ((grid[:, None, :] - self.colors[None]) ** 2).sum(axis=2)
        labels = squared.argmin(axis=1)
        labels[squared.min(axis=1) > self.color_tolerance**2] = -1
        side = 256 >> _BIN_SHIFT
        return labels.reshape(side, side, side).astype(np.int64)

    def label_pixels(self, image: np.ndarray) -> np.ndarray:
        """``quantize``, then anti-aliased edges: a background pixel next to a colour region joins it
        when it is at least half that colour.

        An edge pixel is a blend a * object + (1 - a) * background; a is estimated by projecting
        it onto the line from the local background colour to the region's local colour (means over
        a small window, away from edges), so that the region ends where the object covers half.
        """
        labels = self.quantize(image)
        pixels = image.astype(np.float32)
        background = labels < 0
        clean_background = background & ~ndimage.binary_dilation(~background, structure=_EIGHT_NEIGHBOURS)
        local_background, has_background = _local_mean(pixels, clean_background)
        best_coverage = np.full(labels.shape, 0.5, dtype=np.float32)
        refined = labels.copy()
        for color in np.unique(labels[labels >= 0]):
            core = labels == color
            edge = ndimage.binary_dilation(core, structure=_EIGHT_NEIGHBOURS) & background & has_background
            local_color, _ = _local_mean(pixels, core)
            blend, base, full = pixels[edge], local_background[edge], local_color[edge]
            span = full - base
            coverage = ((blend - base) * span).sum(axis=1) / np.maximum((span * span).sum(axis=1), 1e-6)
            rows, cols = np.nonzero(edge)
            wins = coverage >= best_coverage[rows, cols]
            refined[rows[wins], cols[wins]] = color
            best_coverage[rows[wins], cols[wins]] = coverage[wins]
        return refined

    def _regions(self, image: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(colour index, mask) of every connected one-colour region of at least ``min_region_area`` pixels."""
        labels = self.label_pixels(image)
        regions = []
        for color in np.unique(labels[labels >= 0]):
            components, count = ndimage.label(labels == color, structure=_EIGHT_NEIGHBOURS)
            for index in range(1, count + 1):
                mask = components == index
                if mask.sum() >= self.min_region_area:
                    regions.append((int(color), mask))
        return regions

    def _distractors(self, regions: list[tuple[int, np.ndarray]]) -> list[np.ndarray]:
        masks = [mask for _, mask in regions]
        grown = [ndimage.binary_dilation(mask, structure=_EIGHT_NEIGHBOURS) for mask in masks]
        touching = [
            masks[i] | masks[j]
            for i in range(len(masks))
            for j in range(i + 1, len(masks))
            if regions[i][0] != regions[j][0] and (grown[i] & masks[j]).any()
        ]
        same_color = []
        for color in sorted({color for color, _ in regions}):
            members = [mask for region_color, mask in regions if region_color == color]
            if len(members) > 1:
                same_color.append(np.logical_or.reduce(members))
        halves = [half for mask in masks if (half := self._half(mask)) is not None]
        return touching + same_color + halves

    def _half(self, mask: np.ndarray) -> np.ndarray | None:
        """The top or left part of a large region, cut at its centroid across its longer side."""
        if mask.sum() < 4 * self.min_region_area:
            return None
        rows, cols = np.nonzero(mask)
        if np.ptp(rows) >= np.ptp(cols):
            half = mask & (np.arange(mask.shape[0])[:, None] < rows.mean())
        else:
            half = mask & (np.arange(mask.shape[1])[None, :] < cols.mean())
        return half if half.sum() >= self.min_region_area else None


def build_proposal_generator(config: ProposalConfig, device: str = "cpu") -> ProposalGenerator:
    """The generator ``config.kind`` names; SAM weights come from ``config.sam_checkpoint``."""
    if config.kind == "sam":
        if config.sam_checkpoint is None:
            raise ValueError(
                "proposals.sam_checkpoint is not set: point it at sam_vit_h_4b8939.pth "
                "(https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth) or use the `shapes` preset"
            )
        return SamProposalGenerator(load_sam(config.sam_checkpoint, config.sam_model_type, device), config)
    if config.kind == "color":
        from llmseg.data.shapes import PALETTE  # the synthetic world's colours; only this generator needs them

        return ColorProposalGenerator(
            PALETTE,
            max_proposals=config.max_proposals,
            color_tolerance=config.color_tolerance,
            min_region_area=config.min_region_area,
        )
    raise ValueError(f"unknown proposals.kind {config.kind!r}; choose 'sam' or 'color'")
