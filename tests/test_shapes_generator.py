"""The `shapes` generator: deterministic bytes, masks that match the answers, the world's rules, every tag."""

from __future__ import annotations

import argparse
import colorsys
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from llmseg.data.shapes import PALETTE, SHAPE_KINDS, TAGS, generate_sample, make_shapes, register, tokenize, vocabulary
from llmseg.data.shapes.generate import GeneratedSample
from llmseg.data.shapes.queries import SceneFacts, answer_set
from llmseg.data.shapes.scene import MIN_VISIBLE_PIXELS

NUMBER = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
NAME = re.compile(
    rf"the (?:({'|'.join(NUMBER)}) )?({'|'.join(PALETTE)}) ({'|'.join(SHAPE_KINDS)})(?:e?s)?"
    r"(?: (on the left|on the right|at the top|at the bottom))?"
)


@pytest.fixture(scope="module")
def generated() -> list[GeneratedSample]:
    return [generate_sample(3, "validation", index) for index in range(300)]


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def named_objects(item: GeneratedSample) -> set[int]:
    """Read the answer sentence back into object indices, from the scene alone."""
    scene, named = item.scene, set()
    if "no-target" in item.sample.tags:
        return named  # the answer repeats the question ("There is no star left of the red heart ...")
    for number, colour, kind, side in NAME.findall(item.sample.answer):
        group = [i for i, o in enumerate(scene.objects) if (o.colour, o.kind) == (colour, kind)]
        if number:
            assert len(group) == NUMBER[number], item.sample.answer
            named |= set(group)
        elif side:
            x_or_y = 0 if side in ("on the left", "on the right") else 1
            pick = max if side in ("on the right", "at the bottom") else min
            named.add(pick(group, key=lambda i: _centroid(scene.masks[i])[x_or_y]))
        else:
            assert len(group) == 1, f"{item.sample.answer!r} names one of {len(group)} {colour} {kind}s"
            named.add(group[0])
    return named


def test_answer_mask_is_the_union_of_the_objects_the_answer_names(generated: list[GeneratedSample]) -> None:
    for item in generated:
        named = named_objects(item)
        union = np.zeros_like(item.sample.mask)
        for index in named:
            union |= item.scene.masks[index]
        assert np.array_equal(union, item.sample.mask), (item.sample.query, item.sample.answer)
        assert named == item.question.targets


def test_no_target_masks_are_empty_and_others_are_not(generated: list[GeneratedSample]) -> None:
    for item in generated:
        empty = not item.sample.mask.any()
        assert empty == ("no-target" in item.sample.tags), item.sample.query
        if empty:
            assert item.sample.answer.startswith(("There is no", "There are no", "No ")), item.sample.answer
        if "multi-target" in item.sample.tags:
            assert len(item.question.targets) >= 2


def test_each_question_resolves_again_to_its_targets(generated: list[GeneratedSample]) -> None:
    for item in generated:
        facts = SceneFacts(item.scene)
        assert answer_set(item.question.query, facts, plural=item.question.plural) == item.question.targets


def test_every_tag_occurs_in_a_few_hundred_samples(generated: list[GeneratedSample]) -> None:
    seen = {tag for item in generated for tag in item.sample.tags}
    assert seen == set(TAGS)


def test_scenes_keep_the_rules_a_pixel_proposal_generator_relies_on(generated: list[GeneratedSample]) -> None:
    kernel = np.ones((3, 3), np.uint8)
    for item in generated[:100]:
        scene = item.scene
        assert (
            2 <= len(scene.objects) <= 8
            and 256 <= min(scene.width, scene.height) <= max(scene.width, scene.height) <= 384
        )
        assert (scene.masks.sum(axis=0) <= 1).all(), "instance masks overlap"
        for i, (obj, mask) in enumerate(zip(scene.objects, scene.masks, strict=True)):
            assert mask.sum() >= MIN_VISIBLE_PIXELS
            assert cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)[0] == 2
            grown = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
            for j, other in enumerate(scene.objects):
                if j != i and other.colour == obj.colour:
                    assert not (grown & scene.masks[j]).any(), "two objects of one colour touch"


def test_backgrounds_are_far_less_saturated_than_the_palette(generated: list[GeneratedSample]) -> None:
    palette_saturation = min(colorsys.rgb_to_hsv(*(np.array(rgb) / 255))[1] for rgb in PALETTE.values())
    for item in generated[:30]:
        image = cv2.imdecode(np.frombuffer(item.sample.image, np.uint8), cv2.IMREAD_COLOR)
        untouched = np.ones(image.shape[:2], bool)
        for coverage in item.scene.coverage:
            untouched[coverage.box()] &= coverage.alpha == 0
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[untouched]
        assert hsv[:, 1].max() / 255 < palette_saturation / 2


def test_questions_and_answers_use_only_the_vocabulary(generated: list[GeneratedSample]) -> None:
    words = vocabulary()
    assert words == sorted(set(words)) and all(w == w.lower() for w in words)
    used = {token for item in generated for token in tokenize(item.sample.query + " " + item.sample.answer)}
    assert used <= set(words), used - set(words)


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    def write(seed: int, workers: int) -> dict[str, bytes]:
        public, truth = tmp_path / "public", tmp_path / "truth"
        make_shapes(public, train=5, validation=6, test=7, seed=seed, holdout_dir=truth, workers=workers)
        return {str(p.relative_to(tmp_path)): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}

    first = write(seed=11, workers=1)
    assert first == write(seed=11, workers=2)
    other = write(seed=12, workers=1)
    assert other.keys() == first.keys()
    assert all(other[name] != first[name] for name in first)


def test_make_shapes_refuses_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        make_shapes(tmp_path, train=0, validation=0, test=0, seed=0)
    with pytest.raises(ValueError, match="--test"):
        make_shapes(tmp_path, train=2, validation=0, test=0, seed=0, holdout_dir=tmp_path / "gt")
    with pytest.raises(ValueError, match="differ"):
        make_shapes(tmp_path, train=0, validation=0, test=2, seed=0, holdout_dir=tmp_path)


def test_the_sub_command_writes_a_loadable_split(tmp_path: Path) -> None:
    from eval.contract import load_split

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["make-shapes", "--out", str(tmp_path), "--validation", "4", "--seed", "5", "--workers", "1"]
    )
    assert args.run(args) == 0
    split = load_split(tmp_path, "validation")
    assert len(split) == 4 and split[0]["source"] == "shapes"
    assert "--validation 4 --seed 5" in (tmp_path / "README.md").read_text()
