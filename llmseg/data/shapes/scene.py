"""Scenes of the `shapes` world: flat-coloured shapes laid out on a background, with exact masks.

A scene lists its objects bottom to top. Each object's coverage of every pixel is rasterised at
``SUPERSAMPLE`` times the resolution and averaged, which gives anti-aliased edges; its instance
mask is the set of pixels it covers at least half that no object above it covers at least half.
The image is composited from the same coverage (``render.py``), so image and masks agree by
construction.

The layout keeps the world easy to segment from pixels, on purpose: every object has one flat
colour from ``PALETTE``; two objects of the same colour never touch or overlap (occlusion happens
only between different colours); every visible part is one 4-connected region of at least
``MIN_VISIBLE_PIXELS`` pixels that keeps most of its shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Saturated, mutually distinct colours; backgrounds (render.py) stay low-saturation greys/browns.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (250, 135, 10),
    "yellow": (245, 215, 25),
    "green": (35, 165, 60),
    "blue": (35, 80, 225),
    "purple": (135, 55, 200),
    "pink": (250, 110, 185),
    "cyan": (20, 200, 215),
}

SHAPE_KINDS: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "hexagon",
    "ring",
    "cross",
    "heart",
    "diamond",
    "crescent",
)

# Corner counts where a person would agree on them; curved shapes with tips have none defined.
CORNERS: dict[str, int | None] = {
    "circle": 0,
    "ring": 0,
    "triangle": 3,
    "square": 4,
    "diamond": 4,
    "hexagon": 6,
    "star": 10,
    "cross": 12,
    "heart": None,
    "crescent": None,
}

IMAGE_SIDES = (256, 288, 320, 352, 384)
MIN_VISIBLE_PIXELS = 150
MIN_VISIBLE_FRACTION = 0.7  # an occluded object keeps this share of its own area
SUPERSAMPLE = 4
SAME_COLOUR_GAP = 3  # pixels kept free between two objects of one colour
MIN_SIZE = 15.0  # reference radius in pixels


@dataclass(frozen=True)
class SceneObject:
    """One shape: ``x``, ``y`` its centre in pixels (x right, y down), ``size`` the radius of its
    reference circle in pixels, ``angle`` a rotation in radians, ``rgb`` its flat colour."""

    kind: str
    colour: str
    x: float
    y: float
    size: float
    angle: float
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Coverage:
    """An object's coverage inside its pixel box ``[y0:y1, x0:x1]``: ``alpha`` float32 in [0, 1],
    ``solid`` the pixels covered at least half (its mask before occlusion), ``halo`` that mask
    grown by ``SAME_COLOUR_GAP`` pixels."""

    x0: int
    y0: int
    x1: int
    y1: int
    alpha: np.ndarray
    solid: np.ndarray
    halo: np.ndarray

    def box(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@dataclass(frozen=True)
class Background:
    """The background's recipe; ``render.background`` turns it into pixels. ``base`` RGB, a
    ``pattern`` name with its ``period`` in pixels and ``amplitude`` in grey levels, an optional
    linear ``gradient`` (grey levels across the image, ``vertical`` or not) and a ``seed`` for the
    noise tile."""

    base: tuple[int, int, int]
    pattern: str
    period: int
    amplitude: float
    gradient: float
    vertical: bool
    seed: int


@dataclass(frozen=True)
class Scene:
    """A laid-out scene: ``objects`` bottom to top, their ``coverage``, and ``masks`` (N x H x W
    bool), each object's visible instance mask."""

    width: int
    height: int
    objects: tuple[SceneObject, ...]
    coverage: tuple[Coverage, ...]
    masks: np.ndarray
    background: Background


def _regular_polygon(corners: int, radius: float, start: float) -> np.ndarray:
    angles = start + np.arange(corners) * (2 * math.pi / corners)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 72, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    points = np.stack([x, y + 2.5], axis=1) / 16.5
    return points


def _star() -> np.ndarray:
    angles = -math.pi / 2 + np.arange(10) * (math.pi / 5)
    radii = np.where(np.arange(10) % 2 == 0, 1.1, 0.46)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles) + 0.08], axis=1)


def _cross() -> np.ndarray:
    a, w = 1.0, 0.34
    return np.array(
        [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w)]
    )


# Outlines at unit size (reference radius 1), centred on the origin, y down.
_OUTLINES: dict[str, np.ndarray] = {
    "square": np.array([(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]),
    "diamond": np.array([(0.0, -1.1), (0.66, 0.0), (0.0, 1.1), (-0.66, 0.0)]),
    "triangle": _regular_polygon(3, 1.15, -math.pi / 2) + np.array([0.0, 0.15]),
    "star": _star(),
    "hexagon": _regular_polygon(6, 1.0, 0.0),
    "cross": _cross(),
    "heart": _heart(),
}

# How far each kind may turn (radians) and still read as itself (a square turned 45 degrees is a diamond).
_MAX_TURN = {
    "square": 0.26,
    "diamond": 0.17,
    "triangle": 0.2,
    "star": 0.26,
    "hexagon": math.pi / 6,
    "cross": 0.26,
    "heart": 0.2,
    "crescent": math.pi,
    "circle": 0.0,
    "ring": 0.0,
}

_RING_HOLE = 0.55  # inner radius of a ring, as a share of its outer radius
_CRESCENT_BITE = (0.86, 0.5)  # radius and offset of the circle cut out of a crescent


def _extent(kind: str, size: float) -> float:
    """Radius of a circle around the centre that contains the whole shape, in pixels."""
    if kind in _OUTLINES:
        return float(np.hypot(*_OUTLINES[kind].T).max()) * size
    return size


def rasterise(obj: SceneObject, width: int, height: int) -> Coverage:
    """Rasterise one object's coverage at ``SUPERSAMPLE`` x and average it down to pixels."""
    pad = SAME_COLOUR_GAP + 2
    reach = _extent(obj.kind, obj.size)
    x0, y0 = max(0, math.floor(obj.x - reach) - pad), max(0, math.floor(obj.y - reach) - pad)
    x1, y1 = min(width, math.ceil(obj.x + reach) + pad), min(height, math.ceil(obj.y + reach) + pad)
    s = SUPERSAMPLE
    canvas = np.zeros(((y1 - y0) * s, (x1 - x0) * s), np.uint8)
    bits = 4  # fixed-point fraction bits for OpenCV's sub-pixel drawing
    scale = s * (1 << bits)

    def to_canvas(points: np.ndarray) -> np.ndarray:
        # A pixel i spans [i, i + 1); the sub-sample j of the canvas spans [j / s, (j + 1) / s).
        shifted = (points + np.array([obj.x - x0, obj.y - y0])) * scale - (1 << bits) / 2
        return np.rint(shifted).astype(np.int32)

    def disc(cx: float, cy: float, radius: float, value: int) -> None:
        centre = to_canvas(np.array([[cx, cy]]))[0]
        cv2.circle(canvas, (int(centre[0]), int(centre[1])), round(radius * scale), value, -1, cv2.LINE_8, bits)

    if obj.kind in _OUTLINES:
        cos, sin = math.cos(obj.angle), math.sin(obj.angle)
        rotation = np.array([[cos, sin], [-sin, cos]])
        points = _OUTLINES[obj.kind] @ rotation * obj.size
        cv2.fillPoly(canvas, [to_canvas(points)], 255, cv2.LINE_8, bits)
    elif obj.kind == "circle":
        disc(0.0, 0.0, obj.size, 255)
    elif obj.kind == "ring":
        disc(0.0, 0.0, obj.size, 255)
        disc(0.0, 0.0, obj.size * _RING_HOLE, 0)
    elif obj.kind == "crescent":
        radius, offset = _CRESCENT_BITE
        disc(0.0, 0.0, obj.size, 255)
        disc(math.cos(obj.angle) * offset * obj.size, math.sin(obj.angle) * offset * obj.size, radius * obj.size, 0)
    else:
        raise ValueError(f"unknown shape kind {obj.kind!r}; use one of {', '.join(SHAPE_KINDS)}")
    alpha = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    solid = alpha >= 0.5
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * SAME_COLOUR_GAP + 1, 2 * SAME_COLOUR_GAP + 1))
    halo = cv2.dilate(solid.astype(np.uint8), kernel).astype(bool)
    return Coverage(x0, y0, x1, y1, alpha, solid, halo)


def _full(coverage: Coverage, field: np.ndarray, height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width), bool)
    canvas[coverage.box()] = field
    return canvas


def _one_region(mask: np.ndarray) -> bool:
    count, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    return count == 2  # the background plus one region


class _Layout:
    """Objects placed so far, with their full-size masks, for checking a new candidate quickly."""

    def __init__(self, width: int, height: int, allow_overlap: bool) -> None:
        self.width, self.height, self.allow_overlap = width, height, allow_overlap
        self.objects: list[SceneObject] = []
        self.coverage: list[Coverage] = []
        self.solid: list[np.ndarray] = []
        self.visible: list[np.ndarray] = []

    def try_add(self, obj: SceneObject) -> bool:
        """Add ``obj`` on top if every rule of the world still holds; return whether it was added."""
        coverage = rasterise(obj, self.width, self.height)
        if int(coverage.solid.sum()) < MIN_VISIBLE_PIXELS or not _one_region(coverage.solid):
            return False  # too small, or thin parts (a crescent's tips) fell apart into islands
        box = coverage.box()
        new_visible: list[np.ndarray | None] = []
        for other, solid, visible in zip(self.objects, self.solid, self.visible, strict=True):
            touches = bool((coverage.halo & solid[box]).any())
            if touches and (other.colour == obj.colour or not self.allow_overlap):
                return False
            if not (coverage.solid & visible[box]).any():
                new_visible.append(None)
                continue
            remaining = visible.copy()
            remaining[box] &= ~coverage.solid
            area = int(remaining.sum())
            if area < max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * solid.sum()) or not _one_region(remaining):
                return False
            new_visible.append(remaining)
        for i, remaining in enumerate(new_visible):
            if remaining is not None:
                self.visible[i] = remaining
        solid = _full(coverage, coverage.solid, self.height, self.width)
        self.objects.append(obj)
        self.coverage.append(coverage)
        self.solid.append(solid)
        self.visible.append(solid.copy())
        return True


def _sample_background(rng: np.random.Generator) -> Background:
    """A low-saturation grey/brown base with a pattern that PNG compresses well (a tiled texture)."""
    grey = rng.uniform(70, 190)
    tint = rng.uniform(-0.05, 0.05, 3) * rng.choice([0.0, 1.0])
    brown = np.array([0.08, 0.02, -0.07]) * rng.uniform(0, 1) * rng.choice([0.0, 1.0])
    base = np.clip(grey * (1 + tint + brown), 0, 255)  # chroma relative to brightness: saturation stays low
    pattern = str(rng.choice(["noise", "stripes", "checker", "dots", "weave"]))
    return Background(
        base=(int(base[0]), int(base[1]), int(base[2])),
        pattern=pattern,
        period=int(rng.choice([8, 12] if pattern == "noise" else [8, 12, 16, 24, 32])),  # noise tiles cost bytes
        amplitude=float(rng.uniform(6, 16)),
        gradient=float(rng.uniform(-30, 30)),
        vertical=bool(rng.random() < 0.5),
        seed=int(rng.integers(2**31)),
    )


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw a scene of 2 to 8 objects that follows the world's rules (see the module docstring).

    Colours and kinds come from small per-scene subsets, so repeats (and with them relations,
    negations and uniqueness questions) are common.
    """
    while True:
        width, height = (int(v) for v in rng.choice(IMAGE_SIDES, 2))
        wanted = int(rng.integers(2, 9))
        colours = rng.choice(list(PALETTE), size=int(rng.integers(2, 6)), replace=False)
        kinds = rng.choice(SHAPE_KINDS, size=int(rng.integers(2, 6)), replace=False)
        layout = _Layout(width, height, allow_overlap=bool(rng.random() < 0.45))
        largest = float(np.clip(math.sqrt(width * height / wanted) * 0.3, MIN_SIZE + 4, 0.18 * min(width, height)))
        for _ in range(wanted):
            for _attempt in range(25):
                kind, colour = str(rng.choice(kinds)), str(rng.choice(colours))
                size = float(rng.uniform(MIN_SIZE, largest))
                reach = _extent(kind, size) + 2
                jitter = rng.uniform(0.9, 1.06)
                rgb = tuple(int(v) for v in np.clip(np.rint(np.array(PALETTE[colour]) * jitter), 0, 255))
                candidate = SceneObject(
                    kind=kind,
                    colour=colour,
                    x=float(rng.uniform(reach, width - reach)),
                    y=float(rng.uniform(reach, height - reach)),
                    size=size,
                    angle=float(rng.uniform(-_MAX_TURN[kind], _MAX_TURN[kind])),
                    rgb=(rgb[0], rgb[1], rgb[2]),
                )
                if layout.try_add(candidate):
                    break
        if len(layout.objects) >= 2:
            return Scene(
                width=width,
                height=height,
                objects=tuple(layout.objects),
                coverage=tuple(layout.coverage),
                masks=np.stack(layout.visible),
                background=_sample_background(rng),
            )


def build_scene(width: int, height: int, objects: list[SceneObject], background: Background) -> Scene:
    """Lay out given objects bottom to top, checking the world's rules; for tests and crafted scenes.

    Raises ``ValueError`` when an object breaks a rule (too small, touching its colour, hiding
    too much of another).
    """
    layout = _Layout(width, height, allow_overlap=True)
    for obj in objects:
        if not layout.try_add(obj):
            raise ValueError(f"object {obj} breaks a layout rule of the shapes world: move, resize or recolour it")
    return Scene(width, height, tuple(layout.objects), tuple(layout.coverage), np.stack(layout.visible), background)
