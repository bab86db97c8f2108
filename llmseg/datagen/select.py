"""Stage 1: pick images from COCO/LVIS-format instance annotations and build one record each.

The paper's rules are the defaults: an image is "simple" with 2-5 annotated categories and
"complex" with 6 or more. Objects keep their mask as RLE; a box-only annotation (EgoObjects
style) gets its mask from SAM prompted with the box. LVIS marks categories whose instances are
not all annotated; a question about "all of them" would then get an incomplete mask, so such
images are skipped unless told otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from tqdm import tqdm

from eval import rle as rle_utils
from llmseg.datagen.records import IMAGES_FILE, ImageRecord, JsonlAppender, ObjectRecord, read_jsonl, write_jsonl

SELECT_CONFIG_FILE = "select.json"
LEVELS = ("simple", "complex")


@dataclass(frozen=True)
class SelectionRules:
    """Which images become questions, and which of their objects are listed.

    Category counts are over the objects that survive the object filters (crowd, area).
    ``max_simple``/``max_complex`` cap each level (None = all), drawing a seeded random subset.
    """

    simple_min_categories: int = 2
    simple_max_categories: int = 5
    complex_min_categories: int = 6
    levels: tuple[str, ...] = LEVELS
    min_area_fraction: float = 0.001
    max_objects: int = 40
    max_simple: int | None = None
    max_complex: int | None = None
    skip_crowd: bool = True
    require_exhaustive: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.simple_min_categories <= self.simple_max_categories < self.complex_min_categories:
            raise ValueError("category ranges must satisfy 1 <= simple min <= simple max < complex min")
        if not self.levels or not set(self.levels) <= set(LEVELS):
            raise ValueError(f"levels must be a non-empty subset of {', '.join(LEVELS)}")
        if not 0.0 <= self.min_area_fraction < 1.0:
            raise ValueError("--min-area must be a fraction of the image area in [0, 1)")
        if self.max_objects < 1:
            raise ValueError("--max-objects must be at least 1")
        for cap in (self.max_simple, self.max_complex):
            if cap is not None and cap < 0:
                raise ValueError("--max-simple/--max-complex must be 0 or more")

    def level(self, categories: int) -> str | None:
        """``simple``, ``complex`` or None (outside both ranges)."""
        if self.simple_min_categories <= categories <= self.simple_max_categories:
            return "simple"
        if categories >= self.complex_min_categories:
            return "complex"
        return None


class BoxSegmenter(Protocol):
    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """HWC uint8 RGB image, N x 4 XYXY pixel boxes -> N x H x W bool masks."""
        ...


class SamBoxSegmenter:
    """Masks from SAM box prompts: one image embedding per image, one prediction per box."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, model_type: str = "vit_h", device: str = "cpu") -> SamBoxSegmenter:
        from segment_anything import SamPredictor

        from llmseg.model.sam import load_sam

        return cls(SamPredictor(load_sam(checkpoint, model_type, device)))

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        self.predictor.set_image(image)
        masks = [self.predictor.predict(box=box, multimask_output=False)[0][0] for box in boxes]
        self.predictor.reset_image()
        return np.stack(masks).astype(bool)


def spellings(category: dict[str, Any]) -> tuple[str, list[str]]:
    """Display name ("bat (animal)") and the lower-case words a leak check looks for ("bat", synonyms)."""
    display = str(category["name"]).replace("_", " ").strip()
    names = []
    for raw in [category["name"], *category.get("synonyms", [])]:
        name = re.sub(r"\(.*?\)", "", str(raw).replace("_", " ")).strip().lower()
        name = re.sub(r"\s+", " ", name)
        if name and name not in names:
            names.append(name)
    return display, names


def relative_path(image: dict[str, Any]) -> str:
    """Image path under the images root: ``file_name``, else the last two parts of its URL (LVIS)."""
    if image.get("file_name"):
        return str(image["file_name"])
    url = image.get("coco_url") or image.get("url")
    if not url:
        raise ValueError(f"image {image.get('id')} has neither file_name nor coco_url: cannot find its file")
    return "/".join(str(url).split("/")[-2:])


def load_annotations(path: Path) -> dict[str, Any]:
    """Read a COCO/LVIS instances JSON, checking the parts the stage needs."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"annotation file {path} not found") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise ValueError(f"{path} is not COCO/LVIS instances JSON: it needs images, annotations and categories")
    return data


def _polygons(segmentation: list[list[float]]) -> list[list[float]]:
    """The polygons with at least 3 points (pycocotools rejects shorter ones)."""
    return [p for p in segmentation if len(p) >= 6]


def _box_only(annotation: dict[str, Any]) -> bool:
    """True when an annotation has a box but no usable mask (EgoObjects style)."""
    segmentation = annotation.get("segmentation")
    return not segmentation or (isinstance(segmentation, list) and not _polygons(segmentation))


def _object_mask(annotation: dict[str, Any], height: int, width: int) -> dict[str, Any] | None:
    """The annotation's mask as compressed RLE with str counts, or None when it has only a box."""
    if _box_only(annotation):
        return None
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):
        coco = mask_utils.merge(mask_utils.frPyObjects(_polygons(segmentation), height, width))
    elif isinstance(segmentation.get("counts"), list):
        coco = mask_utils.frPyObjects(segmentation, height, width)
    else:
        coco = rle_utils.to_pycoco(segmentation)
    counts = coco["counts"]
    return {"size": [height, width], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


@dataclass
class _Candidate:
    image: dict[str, Any]
    annotations: list[dict[str, Any]]
    level: str


def plan(data: dict[str, Any], rules: SelectionRules) -> tuple[list[_Candidate], Counter[str]]:
    """Images that pass the rules, in seeded random order, and why the others were dropped."""
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for annotation in data["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    dropped: Counter[str] = Counter()
    candidates = []
    for image in data["images"]:
        height, width = int(image["height"]), int(image["width"])
        kept = [
            a
            for a in by_image.get(image["id"], [])
            if not (rules.skip_crowd and a.get("iscrowd"))
            and float(a.get("area") or a["bbox"][2] * a["bbox"][3]) >= rules.min_area_fraction * height * width
        ]
        categories = {a["category_id"] for a in kept}
        level = rules.level(len(categories))
        if level is None:
            dropped["too-few-categories" if len(categories) < rules.simple_min_categories else "between-levels"] += 1
        elif level not in rules.levels:
            dropped[f"{level}-not-wanted"] += 1
        elif len(kept) > rules.max_objects:
            dropped["too-many-objects"] += 1
        elif rules.require_exhaustive and categories & set(image.get("not_exhaustive_category_ids", [])):
            dropped["not-exhaustive"] += 1
        else:
            kept.sort(key=lambda a: (-float(a.get("area") or 0.0), str(a.get("id"))))
            candidates.append(_Candidate(image, kept, level))
    candidates.sort(key=lambda c: hashlib.sha256(f"{rules.seed}:{c.image['id']}".encode()).hexdigest())
    return candidates, dropped


def _fingerprint(annotations: Path, images_root: Path, source: str, rules: SelectionRules) -> str:
    settings = {"annotations": str(annotations.resolve()), "images": str(images_root.resolve()), "source": source}
    return hashlib.sha256(json.dumps([settings, asdict(rules)], sort_keys=True).encode()).hexdigest()


def run_select(
    annotations: Path,
    images_root: Path,
    work: Path,
    *,
    source: str,
    rules: SelectionRules = SelectionRules(),
    skip_bad: bool = False,
    box_segmenter: Callable[[], BoxSegmenter] | None = None,
) -> dict[str, Any]:
    """Write ``<work>/images.jsonl`` (one ImageRecord per selected image); return the summary.

    ``box_segmenter`` builds the segmenter on first need (so SAM loads only for box-only data).
    Re-running with the same inputs and rules reuses the records already written.
    """
    if not source:
        raise ValueError("give --source, the dataset name written in each sample's source column")
    work.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(annotations, images_root, source, rules)
    config_path = work / SELECT_CONFIG_FILE
    images_path = work / IMAGES_FILE
    same_run = config_path.exists() and json.loads(config_path.read_text()).get("fingerprint") == fingerprint
    existing = read_jsonl(images_path, "image_id") if same_run else {}
    if not same_run:
        images_path.unlink(missing_ok=True)

    data = load_annotations(annotations)
    try:
        categories = {c["id"]: spellings(c) for c in data["categories"]}
        unknown = {a["category_id"] for a in data["annotations"]} - set(categories)
        candidates, dropped = plan(data, rules)
    except (KeyError, TypeError, IndexError) as error:
        raise ValueError(
            f"{annotations} does not follow the COCO instances format ({error!r} is missing or wrong)"
        ) from None
    if unknown:
        raise ValueError(
            f"{annotations}: annotations use category ids missing from its categories: {sorted(unknown)[:5]}"
        )
    config_path.write_text(json.dumps({"fingerprint": fingerprint, "rules": asdict(rules)}, indent=2) + "\n")

    quota = {"simple": rules.max_simple, "complex": rules.max_complex}
    selected: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    seen_ids: set[str] = set()
    segmenter: BoxSegmenter | None = None
    box_masks = 0
    with JsonlAppender(images_path) as appender:
        for candidate in tqdm(candidates, desc="select", unit="image", disable=None):
            cap = quota[candidate.level]
            if cap is not None and counts[candidate.level] >= cap:
                dropped["over-quota"] += 1
                continue
            path = images_root / relative_path(candidate.image)
            image_id = Path(path).stem
            if image_id in seen_ids:
                raise ValueError(f"two selected images share the file name stem {image_id!r}: ids must be unique")
            seen_ids.add(image_id)
            record = existing.get(image_id)
            if record is None:
                problem = _check_image(path, candidate.image)
                if problem:
                    if not skip_bad:
                        raise ValueError(f"{problem[1]}: fix the file or pass --skip-bad to leave it out")
                    dropped[problem[0]] += 1
                    continue
                if segmenter is None and any(_box_only(a) for a in candidate.annotations):
                    if box_segmenter is None:
                        raise ValueError(
                            f"{path} has box-only annotations: pass --sam-checkpoint so SAM can turn boxes into masks"
                        )
                    segmenter = box_segmenter()
                built, boxed = _build_record(candidate, path, image_id, source, categories, segmenter)
                box_masks += boxed
                record = built.to_json()
                appender.append(record)
            selected.append(record)
            counts[candidate.level] += 1
    write_jsonl(images_path, selected)
    return {
        "annotations": str(annotations),
        "images_in_file": len(data["images"]),
        "selected": dict(counts),
        "reused": sum(1 for r in selected if r["image_id"] in existing),
        "objects": sum(len(r["objects"]) for r in selected),
        "box_masks_from_sam": box_masks,
        "dropped": dict(sorted(dropped.items())),
    }


def _check_image(path: Path, image: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) for an image file that cannot be used, or None."""
    if not path.is_file():
        return "missing-image", f"{path} does not exist"
    try:
        with Image.open(path) as opened:
            size = opened.size
    except (UnidentifiedImageError, OSError):
        return "unreadable-image", f"{path} is not a readable image"
    if size != (int(image["width"]), int(image["height"])):
        expected = f"{image['width']}x{image['height']}"
        return "size-mismatch", f"{path} is {size[0]}x{size[1]}, the annotations say {expected}"
    return None


def _build_record(
    candidate: _Candidate,
    path: Path,
    image_id: str,
    source: str,
    categories: dict[Any, tuple[str, list[str]]],
    segmenter: BoxSegmenter | None,
) -> tuple[ImageRecord, int]:
    """The image's record, with SAM masks for box-only objects; also how many boxes SAM filled."""
    height, width = int(candidate.image["height"]), int(candidate.image["width"])
    masks = [_object_mask(a, height, width) for a in candidate.annotations]
    boxed = [i for i, m in enumerate(masks) if m is None]
    if boxed:
        assert segmenter is not None
        with Image.open(path) as opened:
            pixels = np.asarray(opened.convert("RGB"))
        xywh = np.array([candidate.annotations[i]["bbox"] for i in boxed], dtype=np.float32)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        for i, dense in zip(boxed, segmenter(pixels, xyxy), strict=True):
            masks[i] = rle_utils.encode(dense)
    objects = []
    for index, (annotation, mask) in enumerate(zip(candidate.annotations, masks, strict=True), start=1):
        display, names = categories[annotation["category_id"]]
        objects.append(
            ObjectRecord(
                id=index,
                category=display,
                box=[round(float(v), 2) for v in annotation["bbox"]],
                area=rle_utils.area(mask),
                mask=mask,
                names=names,
                annotation_id=annotation.get("id"),
            )
        )
    record = ImageRecord(image_id, str(path), height, width, candidate.level, source, objects)
    return record, len(boxed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the select stage (shared by ``select`` and ``run``)."""
    parser.add_argument("--annotations", type=Path, required=True, help="COCO/LVIS instances JSON")
    parser.add_argument(
        "--images", type=Path, required=True, help="folder holding each image's file_name (or URL tail)"
    )
    parser.add_argument("--source", required=True, help="dataset name for the source column (e.g. coco, ego_objects)")
    parser.add_argument("--simple", default="2-5", help="category range of a simple image (default 2-5)")
    parser.add_argument("--complex-min", type=int, default=6, help="fewest categories of a complex image (default 6)")
    parser.add_argument("--levels", default="simple,complex", help="levels to keep, comma-separated")
    parser.add_argument("--min-area", type=float, default=0.001, help="smallest object, as a fraction of the image")
    parser.add_argument("--max-objects", type=int, default=40, help="skip images with more objects than this")
    parser.add_argument("--max-simple", type=int, default=None, help="at most this many simple images")
    parser.add_argument("--max-complex", type=int, default=None, help="at most this many complex images")
    parser.add_argument("--keep-crowd", action="store_true", help="keep iscrowd annotations as objects")
    parser.add_argument("--keep-not-exhaustive", action="store_true", help="keep partly annotated LVIS images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random subset drawn under a cap")
    parser.add_argument("--skip-bad", action="store_true", help="skip missing/unreadable images instead of stopping")
    parser.add_argument("--sam-checkpoint", type=Path, default=None, help="SAM weights, for box-only annotations")
    parser.add_argument("--sam-model-type", default="vit_h", help="SAM architecture of the checkpoint")


def rules_from_args(args: argparse.Namespace) -> SelectionRules:
    match = re.fullmatch(r"(\d+)-(\d+)", args.simple)
    if not match:
        raise ValueError(f"--simple must look like 2-5, got {args.simple!r}")
    return SelectionRules(
        simple_min_categories=int(match[1]),
        simple_max_categories=int(match[2]),
        complex_min_categories=args.complex_min,
        levels=tuple(level.strip() for level in args.levels.split(",") if level.strip()),
        min_area_fraction=args.min_area,
        max_objects=args.max_objects,
        max_simple=args.max_simple,
        max_complex=args.max_complex,
        skip_crowd=not args.keep_crowd,
        require_exhaustive=not args.keep_not_exhaustive,
        seed=args.seed,
    )


def select_from_args(args: argparse.Namespace) -> dict[str, Any]:
    checkpoint = args.sam_checkpoint

    def segmenter() -> BoxSegmenter:
        return SamBoxSegmenter.from_checkpoint(checkpoint, args.sam_model_type, args.device)

    return run_select(
        args.annotations,
        args.images,
        args.work,
        source=args.source,
        rules=rules_from_args(args),
        skip_bad=args.skip_bad,
        box_segmenter=segmenter if checkpoint is not None else None,
    )
