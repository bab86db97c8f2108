"""Turn a ``Scene`` into an HWC uint8 RGB image: textured background, then objects composited by coverage.

Background textures repeat with a short period (a tiled noise patch, stripes, a checkerboard,
dots, a weave) over a gentle linear gradient: they read as texture, yet PNG compresses them to a
few kilobytes, which keeps the committed splits small.
"""

from __future__ import annotations

import numpy as np

from llmseg.data.shapes.scene import Background, Scene


def _tile(background: Background) -> np.ndarray:
    """One ``period`` x ``period`` tile of the texture, float32 in [-1, 1]."""
    period = background.period
    ys, xs = np.mgrid[0:period, 0:period]
    half = period // 2
    if background.pattern == "noise":
        return np.random.default_rng(background.seed).uniform(-1, 1, (period, period)).astype(np.float32)
    if background.pattern == "stripes":
        pattern = np.where(((xs + ys) // half) % 2 == 0, 1.0, -1.0)
    elif background.pattern == "checker":
        pattern = np.where((xs // half + ys // half) % 2 == 0, 1.0, -1.0)
    elif background.pattern == "dots":
        dy, dx = ys - half, xs - half
        pattern = np.where(dx * dx + dy * dy <= (period / 5) ** 2, 1.0, -0.3)
    elif background.pattern == "weave":
        pattern = np.where(((ys // half) % 2 == 0) ^ ((xs // half) % 2 == 0), 0.6, -0.6)
    else:
        raise ValueError(f"unknown background pattern {background.pattern!r}")
    return pattern.astype(np.float32)


def background(recipe: Background, height: int, width: int) -> np.ndarray:
    """The HxWx3 float32 background (0-255 scale) a scene's objects are composited onto."""
    tile = _tile(recipe) * recipe.amplitude
    texture = np.tile(tile, (height // recipe.period + 1, width // recipe.period + 1))[:height, :width]
    ramp = np.linspace(-0.5, 0.5, height if recipe.vertical else width, dtype=np.float32) * recipe.gradient
    ramp = ramp[:, None] if recipe.vertical else ramp[None, :]
    grey = texture + ramp
    return np.asarray(recipe.base, np.float32)[None, None, :] + grey[:, :, None]


def render(scene: Scene) -> np.ndarray:
    """Composite the objects bottom to top over the background, each by its anti-aliased coverage."""
    image = background(scene.background, scene.height, scene.width)
    for obj, coverage in zip(scene.objects, scene.coverage, strict=True):
        alpha = coverage.alpha[:, :, None]
        region = image[coverage.box()]
        region *= 1.0 - alpha
        region += alpha * np.asarray(obj.rgb, np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
