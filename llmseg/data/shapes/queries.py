"""Queries: small programs over a scene graph whose answer is a set of objects, or ``Ambiguous``.

``answer_set`` runs a query and either returns the indices of the objects it names or raises
``Ambiguous`` when the scene does not settle it clearly: a relation or a size comparison near its
boundary, a near tie for "largest", an anchor ("the blue star") that is not unique, "the ..."
naming more than one object. Each query also words itself as a noun phrase ("star to the left of
the red heart"); ``questions.py`` wraps that phrase into a question.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from llmseg.data.shapes.knowledge import Fact
from llmseg.data.shapes.scene import CORNERS, Scene

# How clear a geometric fact must be before a question may rely on it.
POSITION_MARGIN = 0.04  # of the shorter image side (at least 10 px): left/right/above/below, extremes
SIZE_RATIO = 1.3  # "bigger" needs this area ratio; below SAME_SIZE_RATIO it is clearly not bigger
SAME_SIZE_RATIO = 1.05
NEAREST_GAP = 8.0  # pixels the nearest object must beat the runner-up by (edge to edge)
NEAREST_RATIO = 1.2  # and its centre distance must be this much shorter
BETWEEN_INSIDE = (0.2, 0.8, 0.25)  # along-segment range and off-segment share that count as between
BETWEEN_OUTSIDE = 0.5  # off-segment share beyond which an object is clearly not between


class Ambiguous(Exception):
    """The scene does not settle the question's answer clearly; the writer draws another question."""


def plural_of(noun: str) -> str:
    """English plural of the world's nouns (all regular but "cross")."""
    return noun + "es" if noun.endswith("ss") else noun + "s"


# --- What the objects are, as a question sees them ---------------------------------------------------


@dataclass(frozen=True)
class ObjectFacts:
    """One object as questions see it: ``x``, ``y`` the centroid of its visible mask in pixels,
    ``area`` its visible pixels, ``full_area`` its pixels before occlusion."""

    index: int
    kind: str
    colour: str
    x: float
    y: float
    area: int
    full_area: int

    @property
    def corners(self) -> int | None:
        return CORNERS[self.kind]


class SceneFacts:
    """The scene graph a question is asked about, with the distances relations need."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.margin = max(10.0, POSITION_MARGIN * min(scene.width, scene.height))
        self.objects: list[ObjectFacts] = []
        for index, (obj, coverage, mask) in enumerate(zip(scene.objects, scene.coverage, scene.masks, strict=True)):
            ys, xs = np.nonzero(mask[coverage.box()])  # a visible mask lies inside its object's box
            x, y = coverage.x0 + float(xs.mean()), coverage.y0 + float(ys.mean())
            self.objects.append(ObjectFacts(index, obj.kind, obj.colour, x, y, len(xs), int(coverage.solid.sum())))
        self._distance_maps: dict[int, np.ndarray] = {}

    def gap(self, anchor: int, other: int) -> float:
        """Shortest distance in pixels between the visible masks of two objects (0 if they touch)."""
        if anchor not in self._distance_maps:
            outside = (~self.scene.masks[anchor]).astype(np.uint8)
            self._distance_maps[anchor] = cv2.distanceTransform(outside, cv2.DIST_L2, 5)
        return float(self._distance_maps[anchor][self.scene.masks[other]].min())


# --- Descriptions of objects ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """A description such as "red star", "blue object", "star", "object that could roll".

    ``head`` is the noun used when no ``kind`` is given. A ``fact`` never joins an attribute of
    its own dimension (no "red object coloured like a lemon").
    """

    colour: str | None = None
    kind: str | None = None
    fact: Fact | None = None
    head: str = "object"

    def matches(self, obj: ObjectFacts) -> bool:
        return (
            (self.colour is None or obj.colour == self.colour)
            and (self.kind is None or obj.kind == self.kind)
            and (self.fact is None or self.fact.matches(obj.kind, obj.colour))
        )

    def select(self, facts: SceneFacts) -> frozenset[int]:
        return frozenset(o.index for o in facts.objects if self.matches(o))

    def phrase(self, plural: bool) -> str:
        noun = self.kind or self.head
        words = [self.colour] if self.colour else []
        words.append(plural_of(noun) if plural else noun)
        if self.fact:
            words.append(self.fact.text)
        return " ".join(words)


def _the(anchor: Filter, facts: SceneFacts) -> ObjectFacts:
    """The one object an anchor description names; ``Ambiguous`` unless there is exactly one."""
    found = anchor.select(facts)
    if len(found) != 1:
        raise Ambiguous(f'"the {anchor.phrase(False)}" names {len(found)} objects')
    return facts.objects[next(iter(found))]


def _holds(value: float, margin: float) -> bool:
    """True when ``value`` is clearly positive, False when clearly negative, ``Ambiguous`` near zero."""
    if abs(value) <= margin:
        raise Ambiguous("a relation is too close to its boundary")
    return value > 0


def _extreme(values: dict[int, float], most: bool, gap: float, ratio: float = 1.0) -> int:
    """The index with the largest (or smallest) value if it beats the runner-up clearly."""
    if not values:
        raise Ambiguous("no object to compare")
    ranked = sorted(values, key=values.get, reverse=most)
    if len(ranked) == 1:
        return ranked[0]
    best, second = values[ranked[0]], values[ranked[1]]
    if most:
        clear = best - second >= gap and best >= second * ratio
    else:
        clear = second - best >= gap and second >= best * ratio
    if not clear:
        raise Ambiguous("a near tie")
    return ranked[0]


# --- Queries ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Select:
    """Every object a description fits ("the green star", "things that could roll")."""

    filter: Filter

    @property
    def category(self) -> str:
        return "implicit" if self.filter.fact else "attribute"

    def candidates(self, facts: SceneFacts) -> frozenset[int]:
        return frozenset(o.index for o in facts.objects)

    def resolve(self, facts: SceneFacts) -> frozenset[int]:
        return self.filter.select(facts)

    def phrase(self, plural: bool) -> str:
        return self.filter.phrase(plural)


RELATION_WORDS = {
    "left": ("to the left of", "left of"),
    "right": ("to the right of", "right of"),
    "above": ("above",),
    "below": ("below", "under"),
}


@dataclass(frozen=True)
class Relative:
    """Objects fitting a description on one side of an anchor ("the star to the left of the red heart").

    Sides compare visible-mask centroids, as CLEVR does: x for left/right, y for above/below.
    """

    filter: Filter
    relation: str
    anchor: Filter
    wording: int = 0
    category = "relation"

    def candidates(self, facts: SceneFacts) -> frozenset[int]:
        return self.filter.select(facts) - {_the(self.anchor, facts).index}

    def resolve(self, facts: SceneFacts) -> frozenset[int]:
        anchor = _the(self.anchor, facts)
        found = set()
        for index in self.candidates(facts):
            obj = facts.objects[index]
            offset = {
                "left": anchor.x - obj.x,
                "right": obj.x - anchor.x,
                "above": anchor.y - obj.y,
                "below": obj.y - anchor.y,
            }[self.relation]
            if _holds(offset, facts.margin):
                found.add(index)
        return frozenset(found)

    def phrase(self, plural: bool) -> str:
        words = RELATION_WORDS[self.relation][self.wording]
        return f"{self.filter.phrase(plural)} {words} the {self.anchor.phrase(False)}"


NEAREST_WORDS = ("nearest to", "closest to")


@dataclass(frozen=True)
class Nearest:
    """The object fitting a description that is nearest an anchor, edge to edge and centre to centre."""

    filter: Filter
    anchor: Filter
    wording: int = 0
    category = "relation"

    def candidates(self, facts: SceneFacts) -> frozenset[int]:
        return self.filter.select(facts) - {_the(self.anchor, facts).index}

    def resolve(self, facts: SceneFacts) -> frozenset[int]:
        anchor = _the(self.anchor, facts)
        candidates = self.candidates(facts)
        if not candidates:
            return frozenset()
        gaps = {i: facts.gap(anchor.index, i) for i in candidates}
        centres = {i: math.dist((facts.objects[i].x, facts.objects[i].y), (anchor.x, anchor.y)) for i in candidates}
        by_gap = _extreme(gaps, most=False, gap=NEAREST_GAP)
        if _extreme(centres, most=False, gap=0.0, ratio=NEAREST_RATIO) != by_gap:
            raise Ambiguous("edge and centre distances disagree about the nearest object")
        return frozenset([by_gap])

    def phrase(self, plural: bool) -> str:
        words = NEAREST_WORDS[self.wording]
        return f"{self.filter.phrase(plural)} {words} the {self.anchor.phrase(False)}"


@dataclass(frozen=True)
class Between:
    """Objects fitting a description whose centroid lies on the stretch between two anchors."""

    filter: Filter
    first: Filter
    second: Filter
    category = "relation"

    def candidates(self, facts: SceneFacts) -> frozenset[int]:
        return self.filter.select(facts) - {_the(self.first, facts).index, _the(self.second, facts).index}

    def resolve(self, facts: SceneFacts) -> frozenset[int]:
        a, b = _the(self.first, facts), _the(self.second, facts)
        if a.index == b.index:
            raise Ambiguous("both anchors are the same object")
        dx, dy = b.x - a.x, b.y - a.y
        length = math.hypot(dx, dy)
        low, high, off = BETWEEN_INSIDE
        found = set()
        for index in self.candidates(facts):
            obj = facts.objects[index]
            along = ((obj.x - a.x) * dx + (obj.y - a.y) * dy) / length**2
            aside = abs((obj.x - a.x) * dy - (obj.y - a.y) * dx) / length**2
            if low <= along <= high and aside <= off:
                found.add(index)
            elif 0.0 <= along <= 1.0 and aside < BETWEEN_OUTSIDE:
                raise Ambiguous("an object is neither clearly between nor clearly outside")
        return frozenset(found)

    def phrase(self, plural: bool) -> str:
        first, second = self.first.phrase(False), self.second.phrase(False)
        return f"{self.filter.phrase(plural)} between the {first} and the {second}"


EXTREME_WORDS = {
    ("area", True): ("largest {}", "biggest {}"),
    ("area", False): ("smallest {}",),
    ("x", False): ("leftmost {}",),
    ("x", True): ("rightmost {}",),
    ("y", False): ("highest {}", "topmost {}"),
    ("y", True): ("lowest {}", "bottommost {}"),
    ("corners", True): ("{} with the most corners",),
    ("corners", False): ("{} with the fewest corners",),
}


@dataclass(frozen=True)
class Extreme:
    """The object fitting a description with the most or least of a measure (area, corners, x, y).

    Areas must win clearly both before and after occlusion; corner counts must be defined for
    every object compared (a heart's or a crescent's are not).
    """

    filter: Filter
    measure: str
    most: bool
    wording: int = 0
    category = "comparative"

    def candidates(self, facts: SceneFacts) -> frozenset[int]:
        return self.filter.select(facts)

    def resolve(self, facts: SceneFacts) -> frozenset[int]:
        members = [facts.objects[i] for i in self.candidates(facts)]
        if not members:
            return frozenset()
        if self.measure == "area":
            winner = _extreme({o.index: float(o.area) for o in members}, self.most, 0.0, SIZE_RATIO)
            if _extreme({o.index: float(o.full_area) for o in members}, self.most, 0.0, SIZE_RATIO) != winner:
                raise Ambiguous("visible and full areas disagree")
        elif self.measure == "corners":
            counts = {o.index: o.corners for o in members}
            if any(count is None for count in counts.values()):
                raise Ambiguous("a compared shape has no agreed corner count")
            winner = _extreme({i: float(c) for i, c in counts.items() if c is not None}, self.most, 1.0)
        else:
            values = {o.index: o.x if self.measure == "x" else o.y for o in members}
            winner = _extreme(values, self.most, facts.margin)
        return frozenset([winner])

    def phrase(self, plural: bool) -> str:
        return EXTREME_WORDS[(self.measure, self.most)][self.wording].format(self.filter.phrase(plural))


COMPARE_WORDS = ("bigger than", "larger than")  # "smaller than" has no second wording


@dataclass(frozen=True)
class SizeCompare:
    """Objects fitting a description that are bigger (or smaller) than an anchor, clearly so
    both before and after occlusion."""

    filter: Filter
    anchor: Filter
    bigger: bool
    wording: int = 0
    category = "comparative"

    def candidates(self, facts: SceneFacts) -> frozenset[int]:
        return self.filter.select(facts) - {_the(self.anchor, facts).index}

    def resolve(self, facts: SceneFacts) -> frozenset[int]:
        anchor = _the(self.anchor, facts)
        found = set()
        for index in self.candidates(facts):
            obj = facts.objects[index]
            ratios = (obj.area / anchor.area, obj.full_area / anchor.full_area)
            if not self.bigger:
                ratios = (1 / ratios[0], 1 / ratios[1])
            if min(ratios) >= SIZE_RATIO:
                found.add(index)
            elif max(ratios) > SAME_SIZE_RATIO:
                raise Ambiguous("a size comparison is too close to call")
        return frozenset(found)

    def phrase(self, plural: bool) -> str:
        words = COMPARE_WORDS[self.wording] if self.bigger else "smaller than"
        return f"{self.filter.phrase(plural)} {words} the {self.anchor.phrase(False)}"


@dataclass(frozen=True)
class Only:
    """The only object a description fits ("the only blue object"); the description must fit one."""

    filter: Filter
    category = "unique"

    def candidates(self, facts: SceneFacts) -> frozenset[int]:
        return frozenset(o.index for o in facts.objects)

    def resolve(self, facts: SceneFacts) -> frozenset[int]:
        found = self.filter.select(facts)
        if len(found) != 1:
            raise Ambiguous(f'"the only {self.filter.phrase(False)}" fits {len(found)} objects')
        return found

    def phrase(self, plural: bool) -> str:
        return f"only {self.filter.phrase(False)}"


SOLE_WORDS = ("whose {} no other {} has", "with a {} that no other {} has", "whose {} differs from every other {}")


@dataclass(frozen=True)
class SoleValue:
    """Objects within a scope whose colour (or shape) no other object of the scope shares
    ("the star whose colour no other star has")."""

    scope: Filter
    attribute: Literal["colour", "shape"]
    wording: int = 0
    category = "unique"

    def candidates(self, facts: SceneFacts) -> frozenset[int]:
        return self.scope.select(facts)

    def resolve(self, facts: SceneFacts) -> frozenset[int]:
        members = [facts.objects[i] for i in self.candidates(facts)]
        value = (lambda o: o.colour) if self.attribute == "colour" else (lambda o: o.kind)
        counts = Counter(value(o) for o in members)
        return frozenset(o.index for o in members if counts[value(o)] == 1)

    def phrase(self, plural: bool) -> str:
        words = SOLE_WORDS[self.wording].format(self.attribute, self.scope.phrase(False))
        return f"{self.scope.phrase(plural)} {words}"


@dataclass(frozen=True)
class Negation:
    """Objects fitting a description but not a colour or kind ("the star that is not red")."""

    base: Filter
    not_colour: str | None = None
    not_kind: str | None = None
    category = "negation"

    def candidates(self, facts: SceneFacts) -> frozenset[int]:
        return self.base.select(facts)

    def resolve(self, facts: SceneFacts) -> frozenset[int]:
        excluded = Filter(colour=self.not_colour, kind=self.not_kind).select(facts)
        return self.candidates(facts) - excluded

    def phrase(self, plural: bool) -> str:
        verb = "are not" if plural else "is not"
        if self.not_colour:
            return f"{self.base.phrase(plural)} that {verb} {self.not_colour}"
        kind = str(self.not_kind)
        return f"{self.base.phrase(plural)} that {verb} {plural_of(kind) if plural else 'a ' + kind}"


EXCEPT_WORDS = ("other than", "except")


@dataclass(frozen=True)
class Except:
    """Every object but one ("all objects other than the red star")."""

    anchor: Filter
    head: str = "object"
    wording: int = 0
    category = "negation"

    def candidates(self, facts: SceneFacts) -> frozenset[int]:
        return frozenset(o.index for o in facts.objects)

    def resolve(self, facts: SceneFacts) -> frozenset[int]:
        return self.candidates(facts) - {_the(self.anchor, facts).index}

    def phrase(self, plural: bool) -> str:
        words = EXCEPT_WORDS[self.wording] if plural else "other than"  # "the object except ..." is not English
        head = plural_of(self.head) if plural else self.head
        return f"{head} {words} the {self.anchor.phrase(False)}"


Query = Select | Relative | Nearest | Between | Extreme | SizeCompare | Only | SoleValue | Negation | Except
# Queries whose wording only makes sense with a few objects to choose among.
_MIN_CANDIDATES = {Only: 3, SoleValue: 3}


def answer_set(query: Query, facts: SceneFacts, *, plural: bool) -> frozenset[int]:
    """The objects a question names; ``Ambiguous`` if the scene does not settle it, or if a
    singular question ("the ...") fits more than one object."""
    targets = query.resolve(facts)
    if not plural and len(targets) > 1:
        raise Ambiguous(f'"the {query.phrase(False)}" fits {len(targets)} objects')
    return targets


def informative(query: Query, facts: SceneFacts, targets: frozenset[int]) -> bool:
    """Whether the question's wording does work: it picks a strict, non-empty-scope subset."""
    candidates = query.candidates(facts)
    return len(candidates) >= _MIN_CANDIDATES.get(type(query), 1) and targets < candidates
