"""The `shapes` question writer: relations mean what they say, and ambiguous scenes are refused."""

from __future__ import annotations

import numpy as np
import pytest

from llmseg.data.shapes.queries import (
    Ambiguous,
    Between,
    Extreme,
    Filter,
    Nearest,
    Negation,
    Only,
    Relative,
    SceneFacts,
    Select,
    SizeCompare,
    SoleValue,
    answer_set,
)
from llmseg.data.shapes.questions import CATEGORIES, write_question
from llmseg.data.shapes.scene import PALETTE, Background, SceneObject, build_scene

PLAIN = Background(
    base=(128, 128, 128), pattern="checker", period=16, amplitude=8.0, gradient=0.0, vertical=True, seed=0
)


def shape(kind: str, colour: str, x: float, y: float, size: float = 24.0) -> SceneObject:
    return SceneObject(kind=kind, colour=colour, x=x, y=y, size=size, angle=0.0, rgb=PALETTE[colour])


def facts_of(*objects: SceneObject, width: int = 320, height: int = 320) -> SceneFacts:
    return SceneFacts(build_scene(width, height, list(objects), PLAIN))


def test_sides_follow_image_coordinates() -> None:
    # 0: a circle on the left, 1: a star lower on the right, 2: a square high up in the middle.
    facts = facts_of(
        shape("circle", "red", 60, 180), shape("star", "blue", 260, 250), shape("square", "green", 160, 60)
    )
    anything, star, circle = Filter(), Filter(kind="star"), Filter(kind="circle")
    assert answer_set(Relative(anything, "left", star), facts, plural=True) == {0, 2}
    assert answer_set(Relative(anything, "right", circle), facts, plural=True) == {1, 2}
    assert answer_set(Relative(anything, "above", circle), facts, plural=True) == {2}
    assert answer_set(Relative(anything, "below", Filter(kind="square")), facts, plural=True) == {0, 1}
    assert answer_set(Relative(anything, "below", circle), facts, plural=True) == {1}


def test_a_relation_near_its_boundary_is_refused() -> None:
    # The circle's centre is 4 px left of the star's: neither clearly left nor clearly not.
    facts = facts_of(shape("circle", "red", 150, 60), shape("star", "blue", 154, 220))
    with pytest.raises(Ambiguous):
        answer_set(Relative(Filter(kind="circle"), "left", Filter(kind="star")), facts, plural=False)


def test_the_needs_exactly_one_object() -> None:
    facts = facts_of(shape("star", "red", 60, 60), shape("star", "red", 250, 250), shape("circle", "blue", 250, 60))
    red_star = Select(Filter(colour="red", kind="star"))
    with pytest.raises(Ambiguous):
        answer_set(red_star, facts, plural=False)  # "the red star": which one?
    assert answer_set(red_star, facts, plural=True) == {0, 1}  # "all red stars" is fine
    with pytest.raises(Ambiguous):  # an anchor must be unique too
        answer_set(Relative(Filter(kind="circle"), "right", Filter(kind="star")), facts, plural=True)
    with pytest.raises(Ambiguous):
        answer_set(Only(Filter(colour="red")), facts, plural=False)
    assert answer_set(Only(Filter(colour="blue")), facts, plural=False) == {2}


def test_near_ties_are_refused_and_clear_winners_kept() -> None:
    close = facts_of(shape("circle", "red", 80, 160, size=30), shape("circle", "blue", 240, 160, size=31))
    with pytest.raises(Ambiguous):
        answer_set(Extreme(Filter(), "area", most=True), close, plural=False)
    clear = facts_of(shape("circle", "red", 80, 160, size=24), shape("circle", "blue", 230, 160, size=40))
    assert answer_set(Extreme(Filter(), "area", most=True), clear, plural=False) == {1}
    assert answer_set(Extreme(Filter(), "area", most=False), clear, plural=False) == {0}
    assert answer_set(SizeCompare(Filter(), Filter(colour="red"), bigger=True), clear, plural=True) == {1}
    with pytest.raises(Ambiguous):
        answer_set(SizeCompare(Filter(), Filter(colour="red"), bigger=True), close, plural=True)


def test_nearest_needs_a_clear_winner() -> None:
    # Two circles at the same distance from the star, left and right of it.
    tie = facts_of(shape("star", "blue", 160, 160), shape("circle", "red", 70, 160), shape("circle", "green", 250, 160))
    with pytest.raises(Ambiguous):
        answer_set(Nearest(Filter(kind="circle"), Filter(kind="star")), tie, plural=False)
    clear = facts_of(
        shape("star", "blue", 160, 160), shape("circle", "red", 90, 160), shape("circle", "green", 280, 160)
    )
    assert answer_set(Nearest(Filter(kind="circle"), Filter(kind="star")), clear, plural=False) == {1}


def test_between_and_corners_and_negation() -> None:
    facts = facts_of(
        shape("square", "red", 50, 160),
        shape("triangle", "green", 160, 165),
        shape("hexagon", "red", 270, 160),
        shape("heart", "blue", 160, 280),
    )
    between = Between(Filter(), Filter(kind="square"), Filter(kind="hexagon"))
    assert answer_set(between, facts, plural=True) == {1}
    with pytest.raises(Ambiguous):  # a heart has no agreed corner count
        answer_set(Extreme(Filter(), "corners", most=True), facts, plural=False)
    red = Filter(colour="red")
    assert answer_set(Extreme(red, "corners", most=True), facts, plural=False) == {2}
    assert answer_set(Negation(Filter(), not_colour="red"), facts, plural=True) == {1, 3}
    assert answer_set(Negation(red, not_kind="square"), facts, plural=False) == {2}
    assert answer_set(SoleValue(Filter(), "colour"), facts, plural=True) == {1, 3}


@pytest.mark.parametrize("category", CATEGORIES)
def test_written_questions_resolve_to_their_targets(category: str) -> None:
    rng = np.random.default_rng(7)
    facts = facts_of(
        shape("star", "red", 60, 60),
        shape("star", "blue", 250, 70),
        shape("circle", "red", 70, 250),
        shape("ring", "yellow", 250, 250),
        shape("square", "red", 160, 160, size=30),
    )
    sizes = ("one", "many") if category == "unique" else ("one", "many", "none")  # "the only ..." always exists
    for size in sizes:
        question = write_question(facts.scene, category, size, rng, attempts=400)
        assert question is not None, f"no {size}-target {category} question for a scene that offers one"
        assert answer_set(question.query, facts, plural=question.plural) == question.targets
        assert {"one": 1, "many": 2, "none": 0}[size] == min(len(question.targets), 2)
        assert question.tags[0] == category
