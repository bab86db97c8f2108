"""Inference: ``Segmenter(model).segment(image, query)`` -> mask, scored proposals, answer, timings.

Everything that depends on the image alone (proposals, the pooled DINOv2 proposal features, the
VLM's vision-tower tokens) is cached per image content in a bounded LRU, so a second question
about the same image runs only the language model and the selection module.

Accepted images: PIL images of any mode and NumPy arrays (HxW, HxWx1, HxWx3, HxWx4; bool, integer
or float), each side between ``MIN_SIDE`` and ``MAX_SIDE`` pixels. Alpha is dropped; uint16 images
(and integer images with values above 255) are scaled from 16 to 8 bits; floats are read as
[0, 1] (or [0, 255] when larger). The image is shrunk so
its long side is at most ``config.proposals.max_side`` for every stage; the returned mask is
scaled back to the input's size.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from llmseg.model.llmseg import LLMSeg
from llmseg.model.proposals import Proposals, resize_mask, shrink_long_side
from llmseg.model.selection import select
from llmseg.model.vlm import is_sentence

MIN_SIDE = 8  # smaller images hold nothing to segment and break patch grids
MAX_SIDE = 8192  # larger sides are almost surely a mistake (and cost seconds just to shrink)
MAX_QUERY_CHARS = 2000  # well inside a 2k-token context once the image tokens are added


@dataclass
class SegmentationResult:
    """The answer to one question about one image.

    mask: H x W bool at the input image's size. proposals: the candidates at the working size
    (long side <= ``config.proposals.max_side``). iop, similarity: (K,) predicted scores.
    selected: (K,) bool, the proposals whose union is ``mask``. existence: probability that any
    target exists (None without an existence head). answer: the generated text, or None when not
    asked. timings: seconds per stage ("prepare", "proposals", "region_features", "image_tokens"
    (the VLM's vision tower), "vlm", "selection", "answer", "total"); image stages read 0.0 when
    served from the cache (``cached``).
    """

    mask: np.ndarray
    proposals: Proposals
    iop: np.ndarray
    similarity: np.ndarray
    selected: np.ndarray
    existence: float | None
    answer: str | None
    timings: dict[str, float] = field(default_factory=dict)
    cached: bool = False


@dataclass
class _ImageWork:
    """What one image costs once: proposals, their pooled region features (1, K, D) and boxes
    (1, K, 5; None when the config reads none), and the VLM's projected vision-tower features (1, N, H)."""

    proposals: Proposals
    features: torch.Tensor
    geometry: torch.Tensor | None
    image_features: torch.Tensor


def to_rgb_array(image: Any) -> np.ndarray:
    """Any PIL image or NumPy image array -> HWC uint8 RGB; a ValueError says what is wrong otherwise."""
    if isinstance(image, Image.Image):
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            array = np.asarray(image)  # high bit depth: scale below instead of PIL's clipping
        else:
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")
            return _check_size(np.asarray(image.convert("RGB")))
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise ValueError(f"expected a PIL image or a NumPy image array, got {type(image).__name__}")

    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[..., :3] if array.shape[2] != 1 else array[..., 0]
    elif array.ndim != 2:
        raise ValueError(f"expected an H x W or H x W x 1/3/4 image array, got shape {array.shape}")
    array = _to_uint8(array)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return _check_size(np.ascontiguousarray(array))


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.size == 0:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("the image has NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        scale = 255.0 if high <= 1.0 else 1.0
        if low < 0 or high * scale > 255.0:
            raise ValueError(f"float image values must lie in [0, 1] or [0, 255], got [{low:g}, {high:g}]")
        return np.rint(array * scale).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise ValueError(f"integer image values must lie in [0, 65535], got [{low}, {high}]")
        if array.dtype != np.uint16 and high <= 255:  # e.g. int64 arrays of 8-bit values
            return array.astype(np.uint8)
        return np.rint(array / 257.0).astype(np.uint8)  # 16-bit range -> 8-bit range
    raise ValueError(f"unsupported image dtype {array.dtype}")


def _check_size(array: np.ndarray) -> np.ndarray:
    height, width = array.shape[:2]
    if min(height, width) < MIN_SIDE or max(height, width) > MAX_SIDE:
        raise ValueError(
            f"the image is {width}x{height} pixels; each side must be between {MIN_SIDE} and {MAX_SIDE} pixels"
        )
    return array


def _check_query(query: Any) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ValueError("the query is empty: ask a question or name the object to segment")
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"the query has {len(query)} characters; keep it under {MAX_QUERY_CHARS}")
    return query.strip()


class Segmenter:
    """Answers questions about images with an ``LLMSeg`` model (put into eval mode), caching per image."""

    def __init__(self, model: LLMSeg, cache_size: int = 8) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must be 0 (no cache) or more")
        self.model = model.eval()
        self.cache_size = cache_size
        self._cache: OrderedDict[str, _ImageWork] = OrderedDict()

    def clear_cache(self) -> None:
        self._cache.clear()

    @torch.inference_mode()
    def segment(
        self, image: Any, query: str, *, answer: bool = False, sentence: bool | None = None
    ) -> SegmentationResult:
        """Segment what ``query`` asks for in ``image``; ``answer=True`` also generates a text reply.

        sentence: ReasonSeg's ``is_sentence`` (long question template); guessed from the query's
        punctuation when None.
        """
        timings: dict[str, float] = {}
        started = clock = time.perf_counter()
        query = _check_query(query)
        original = to_rgb_array(image)
        working = shrink_long_side(original, self.model.config.proposals.max_side)
        key = hashlib.sha256(working.tobytes()).hexdigest() + str(working.shape)
        timings["prepare"] = time.perf_counter() - clock

        work = self._cache.get(key)
        cached = work is not None
        if work is None:
            work = self._image_work(working, timings)
            self._remember(key, work)
        else:
            self._cache.move_to_end(key)
            timings["proposals"] = timings["region_features"] = timings["image_tokens"] = 0.0

        clock = time.perf_counter()
        model = self.model
        vlm_out = model.vlm.encode(
            [working],
            [query],
            sentences=[is_sentence(query) if sentence is None else sentence],
            image_features=work.image_features,
        )
        timings["vlm"] = time.perf_counter() - clock

        clock = time.perf_counter()
        count = len(work.proposals)
        iop = similarity = np.zeros(0, dtype=np.float32)
        existence = None
        if count:
            valid = torch.ones(1, count, dtype=torch.bool, device=model.device)
            scores = model.score(work.features, valid, vlm_out, work.geometry)
            iop = scores.iop[0].float().cpu().numpy()
            similarity = scores.similarity[0].float().cpu().numpy()
            if scores.existence_logit is not None:
                existence = float(torch.sigmoid(scores.existence_logit[0]))
        selected = select(iop, similarity, model.config.selection, existence)
        union = work.proposals.masks[selected].any(axis=0) if selected.any() else np.zeros(working.shape[:2], bool)
        mask = resize_mask(union, *original.shape[:2])
        timings["selection"] = time.perf_counter() - clock

        clock = time.perf_counter()
        text = model.vlm.generate_answer(working, query) if answer else None
        timings["answer"] = time.perf_counter() - clock
        timings["total"] = time.perf_counter() - started
        return SegmentationResult(
            mask=mask,
            proposals=work.proposals,
            iop=iop,
            similarity=similarity,
            selected=selected,
            existence=existence,
            answer=text,
            timings=timings,
            cached=cached,
        )

    def _image_work(self, image: np.ndarray, timings: dict[str, float]) -> _ImageWork:
        """Proposals, the region feature map pooled under each proposal, and the VLM's image tokens."""
        clock = time.perf_counter()
        proposals = self.model.proposal_generator(image)
        timings["proposals"] = time.perf_counter() - clock

        clock = time.perf_counter()
        encoder = self.model.region_encoder
        pixels = encoder.preprocess(image)[None].to(self.model.device)
        feature_map = encoder.feature_map(pixels)
        masks = encoder.prepare_masks(proposals.masks)[None].to(self.model.device)
        geometry = self.model.proposal_boxes(masks)
        features = encoder.pool(feature_map, masks, geometry)
        timings["region_features"] = time.perf_counter() - clock

        clock = time.perf_counter()
        image_features = self.model.vlm.image_features([image])
        timings["image_tokens"] = time.perf_counter() - clock
        return _ImageWork(proposals=proposals, features=features, geometry=geometry, image_features=image_features)

    def _remember(self, key: str, work: _ImageWork) -> None:
        if self.cache_size == 0:
            return
        self._cache[key] = work
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
