"""Drawing proposal masks over an image for the explanation gallery (HWC uint8 RGB in and out)."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

SELECTED_COLOR = (255, 64, 64)
REJECTED_COLOR = (64, 160, 255)


def proposal_overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """The image dimmed outside ``mask`` (HxW bool), tinted inside, with a 1-px outline in ``color``."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"mask of shape {mask.shape} does not match image of shape {image.shape[:2]}")
    tint = np.asarray(color, dtype=np.float32)
    out = image.astype(np.float32) * 0.45
    out[mask] = image[mask].astype(np.float32) * 0.5 + tint * 0.5
    out[find_boundaries(mask, mode="inner")] = tint
    return out.clip(0, 255).astype(np.uint8)
