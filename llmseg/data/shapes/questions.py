"""Write questions about a scene: each verified to have exactly one answer set, worded in a closed vocabulary.

The writer draws queries (``queries.py``) for a wanted category and answer size, keeps the first
whose answer set is certain, of that size and not trivially implied by its wording, and words it
from fixed templates, so a small word-level language model can learn the language
(``vocabulary()`` lists every word).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np

from llmseg.data.shapes.knowledge import COLOUR_FACTS, SHAPE_FACTS
from llmseg.data.shapes.queries import (
    COMPARE_WORDS,
    EXCEPT_WORDS,
    EXTREME_WORDS,
    NEAREST_WORDS,
    RELATION_WORDS,
    SOLE_WORDS,
    Ambiguous,
    Between,
    Except,
    Extreme,
    Filter,
    Nearest,
    Negation,
    ObjectFacts,
    Only,
    Query,
    Relative,
    SceneFacts,
    Select,
    SizeCompare,
    SoleValue,
    answer_set,
    informative,
    plural_of,
)
from llmseg.data.shapes.scene import PALETTE, SHAPE_KINDS, Scene

CATEGORIES = ("attribute", "implicit", "relation", "comparative", "unique", "negation")
TAGS = CATEGORIES + ("multi-target", "no-target")
AnswerSize = Literal["one", "many", "none"]
HEADS = ("object", "shape", "thing")
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}  # a scene has 2 to 8 objects

# --- Wording ---------------------------------------------------------------------------------------------

ASK_ONE = (
    "Segment the {}.",
    "Where is the {}?",
    "Find the {}.",
    "Show me the {}.",
    "Please highlight the {}.",
    "Can you segment the {}?",
    "Mark the {} in this image.",
    "Which one is the {}?",
)
ASK_MANY = (
    "Segment all the {}.",
    "Where are the {}?",
    "Find all {}.",
    "Show me all the {}.",
    "Please highlight all of the {}.",
    "Can you segment every one of the {}?",
    "Mark all {} in this image.",
)
ANSWER_ONE = ("It is {}.", "The answer is {}.", "That is {}.")
ANSWER_MANY = ("They are {}.", "The answer is {}.", "These are {}.")
ANSWER_NONE_ONE = ("There is no {} in this image.", "No {} appears in this image.")
ANSWER_NONE_MANY = ("There are no {} in this image.", "No {} appear in this image.")
POSITION_WORDS = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}


def _position_phrase(facts: SceneFacts, index: int, group: list[int]) -> str:
    """The phrase that best singles out one object among others of its colour and kind (the side
    it stands out on most), or ``Ambiguous`` when it does not stand out on any side."""
    obj = facts.objects[index]
    others = [facts.objects[i] for i in group if i != index]
    separation = {
        "left": min(o.x - obj.x for o in others),
        "right": min(obj.x - o.x for o in others),
        "top": min(o.y - obj.y for o in others),
        "bottom": min(obj.y - o.y for o in others),
    }
    side = max(separation, key=separation.get)
    if separation[side] <= facts.margin:
        raise Ambiguous("no position phrase singles the object out")
    return POSITION_WORDS[side]


def name_objects(facts: SceneFacts, targets: frozenset[int]) -> str:
    """Name a set of objects so each is identifiable: "the red star", "the two blue rings",
    "the green heart on the left"; several joined with commas and "and", left to right."""
    names = []
    seen: set[tuple[str, str]] = set()
    for index in sorted(targets, key=lambda i: (facts.objects[i].x, i)):
        obj = facts.objects[index]
        key = (obj.colour, obj.kind)
        if key in seen:
            continue
        seen.add(key)
        group = [o.index for o in facts.objects if (o.colour, o.kind) == key]
        chosen = [i for i in group if i in targets]
        if len(chosen) == len(group):
            names.append(
                f"the {obj.colour} {obj.kind}"
                if len(group) == 1
                else f"the {NUMBERS[len(group)]} {obj.colour} {plural_of(obj.kind)}"
            )
        else:
            for i in sorted(chosen, key=lambda i: facts.objects[i].x):
                names.append(f"the {obj.colour} {obj.kind} {_position_phrase(facts, i, group)}")
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _sentence(template: str, phrase: str) -> str:
    text = template.format(phrase)
    return text[0].upper() + text[1:]


@dataclass(frozen=True)
class Question:
    """A verified question: its ``query``, the ``targets`` it names (object indices), its wording
    and the ``answer`` sentence, and its ``tags`` (category, plus multi-target or no-target)."""

    query: Query
    plural: bool
    targets: frozenset[int]
    text: str
    answer: str
    tags: tuple[str, ...]


# --- Drawing queries for each category ----------------------------------------------------------------


T = TypeVar("T")


def _pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    return items[int(rng.integers(len(items)))]


def _head(rng: np.random.Generator) -> str:
    return _pick(rng, HEADS)


def _filters_for(obj: ObjectFacts, rng: np.random.Generator) -> list[Filter]:
    """Descriptions that fit ``obj``, from specific to none at all ("object")."""
    return [
        Filter(colour=obj.colour, kind=obj.kind),
        Filter(kind=obj.kind),
        Filter(colour=obj.colour, head=_head(rng)),
        Filter(head=_head(rng)),
    ]


def _anchor_filters(facts: SceneFacts, obj: ObjectFacts) -> list[Filter]:
    """Descriptions that fit ``obj`` and nothing else in the scene."""
    options = [Filter(kind=obj.kind), Filter(colour=obj.colour), Filter(colour=obj.colour, kind=obj.kind)]
    return [f for f in options if f.select(facts) == {obj.index}]


def _random_anchor(facts: SceneFacts, rng: np.random.Generator, exclude: set[int]) -> ObjectFacts | None:
    choices = [o for o in facts.objects if o.index not in exclude and _anchor_filters(facts, o)]
    return _pick(rng, choices) if choices else None


def _draw_attribute(facts: SceneFacts, rng: np.random.Generator, size: AnswerSize) -> Query | None:
    if size == "none":
        colours = sorted({o.colour for o in facts.objects}) if rng.random() < 0.8 else list(PALETTE)
        kinds = sorted({o.kind for o in facts.objects}) if rng.random() < 0.8 else list(SHAPE_KINDS)
        return Select(Filter(colour=_pick(rng, colours), kind=_pick(rng, kinds)))
    obj = _pick(rng, facts.objects)
    return Select(_pick(rng, _filters_for(obj, rng)[:3]))


def _draw_implicit(facts: SceneFacts, rng: np.random.Generator, size: AnswerSize) -> Query | None:
    colour = kind = None
    if size == "none":
        present = {(o.kind, o.colour) for o in facts.objects}
        unmatched = [f for f in SHAPE_FACTS + COLOUR_FACTS if not any(f.matches(*pair) for pair in present)]
        if not unmatched:
            return None
        fact = _pick(rng, unmatched)
    else:
        obj = _pick(rng, facts.objects)
        fact = _pick(rng, [f for f in SHAPE_FACTS + COLOUR_FACTS if f.matches(obj.kind, obj.colour)])
        if rng.random() < (0.35 if size == "one" else 0.15):  # narrow by the other dimension
            colour = obj.colour if fact.kinds is not None else None
            kind = obj.kind if fact.colours is not None else None
    head = "object" if fact.text.startswith(("shaped", "with the shape")) else _head(rng)  # not "shape shaped"
    return Select(Filter(colour=colour, kind=kind, fact=fact, head=head))


def _draw_relation(facts: SceneFacts, rng: np.random.Generator, size: AnswerSize) -> Query | None:
    anchor = _random_anchor(facts, rng, set())
    if anchor is None:
        return None
    anchor_filter: Filter = _pick(rng, _anchor_filters(facts, anchor))
    others = [o for o in facts.objects if o.index != anchor.index]
    target: ObjectFacts = _pick(rng, others)
    described: Filter = _pick(rng, _filters_for(target, rng))
    kinds = ["left", "right", "above", "below", "between"] + (["nearest"] * 2 if size == "one" else [])
    relation = str(_pick(rng, kinds))
    if relation == "nearest":
        return Nearest(described, anchor_filter, wording=int(rng.integers(len(NEAREST_WORDS))))
    if relation == "between":
        second = _random_anchor(facts, rng, {anchor.index})
        if second is None or math.dist((anchor.x, anchor.y), (second.x, second.y)) < 0.3 * facts.scene.width:
            return None
        return Between(described, anchor_filter, _pick(rng, _anchor_filters(facts, second)))
    return Relative(described, relation, anchor_filter, wording=int(rng.integers(len(RELATION_WORDS[relation]))))


def _draw_comparative(facts: SceneFacts, rng: np.random.Generator, size: AnswerSize) -> Query | None:
    obj = _pick(rng, facts.objects)
    described: Filter = _pick(rng, _filters_for(obj, rng)[1:])
    if size == "one" and rng.random() < 0.7:
        measure = str(_pick(rng, ["area", "area", "corners", "x", "y"]))
        most = bool(rng.random() < 0.5)
        return Extreme(described, measure, most, wording=int(rng.integers(len(EXTREME_WORDS[(measure, most)]))))
    anchor = _random_anchor(facts, rng, set())
    if anchor is None:
        return None
    anchor_filter: Filter = _pick(rng, _anchor_filters(facts, anchor))
    return SizeCompare(
        described, anchor_filter, bigger=bool(rng.random() < 0.5), wording=int(rng.integers(len(COMPARE_WORDS)))
    )


def _draw_unique(facts: SceneFacts, rng: np.random.Generator, size: AnswerSize) -> Query | None:
    if size == "none":
        return None
    obj = _pick(rng, facts.objects)
    if size == "one" and rng.random() < 0.45:
        options = [Filter(colour=obj.colour, head=_head(rng)), Filter(kind=obj.kind)]
        return Only(_pick(rng, options))
    attribute: Literal["colour", "shape"] = "colour" if rng.random() < 0.5 else "shape"
    head = _head(rng) if attribute == "colour" else _pick(rng, ("object", "thing"))  # not "shape with a shape"
    scope = Filter(kind=obj.kind) if attribute == "colour" else Filter(colour=obj.colour, head=head)
    if rng.random() < 0.5:
        scope = Filter(head=head)
    return SoleValue(scope, attribute, wording=int(rng.integers(len(SOLE_WORDS))))


def _draw_negation(facts: SceneFacts, rng: np.random.Generator, size: AnswerSize) -> Query | None:
    obj = _pick(rng, facts.objects)
    if size != "none" and rng.random() < 0.2:
        anchor = _random_anchor(facts, rng, set())
        if anchor is None:
            return None
        anchor_filter: Filter = _pick(rng, _anchor_filters(facts, anchor))
        return Except(anchor_filter, head=_head(rng), wording=int(rng.integers(len(EXCEPT_WORDS))))
    other: ObjectFacts = _pick(rng, facts.objects)
    if rng.random() < 0.5:
        base = _pick(rng, [Filter(kind=obj.kind), Filter(head=_head(rng))])
        return Negation(base, not_colour=other.colour)
    base = _pick(rng, [Filter(colour=obj.colour, head=_head(rng)), Filter(head=_head(rng))])
    return Negation(base, not_kind=other.kind)


_DRAWERS = {
    "attribute": _draw_attribute,
    "implicit": _draw_implicit,
    "relation": _draw_relation,
    "comparative": _draw_comparative,
    "unique": _draw_unique,
    "negation": _draw_negation,
}
_SIZE_OK = {"one": lambda n: n == 1, "many": lambda n: n >= 2, "none": lambda n: n == 0}


# Queries that name one object by construction ("the nearest ...", "the largest ...", "the only ...").
_SINGULAR_ONLY = (Nearest, Extreme, Only)


def word_question(
    query: Query, targets: frozenset[int], plural: bool, facts: SceneFacts, rng: np.random.Generator
) -> tuple[str, str]:
    """The question and answer sentences for a verified query; ``Ambiguous`` if the answer
    cannot name its objects unambiguously."""
    text = _sentence(_pick(rng, ASK_MANY if plural else ASK_ONE), query.phrase(plural))
    if not targets:
        templates = ANSWER_NONE_MANY if plural else ANSWER_NONE_ONE
        return text, _sentence(_pick(rng, templates), query.phrase(plural))
    templates = ANSWER_MANY if len(targets) > 1 else ANSWER_ONE
    return text, _sentence(_pick(rng, templates), name_objects(facts, targets))


def write_question(
    scene: Scene, category: str, size: AnswerSize, rng: np.random.Generator, *, attempts: int = 40
) -> Question | None:
    """Draw a question of ``category`` whose answer set has the wanted ``size`` and is certain in
    this scene, or None when ``attempts`` draws found none (the caller draws a new scene)."""
    if category not in _DRAWERS:
        raise ValueError(f"unknown question category {category!r}; use one of {', '.join(CATEGORIES)}")
    facts = SceneFacts(scene)
    extra = {"one": (), "many": ("multi-target",), "none": ("no-target",)}[size]
    for _ in range(attempts):
        query = _DRAWERS[category](facts, rng, size)
        if query is None:
            continue
        plural = size == "many" or (
            size == "none" and not isinstance(query, _SINGULAR_ONLY) and bool(rng.random() < 0.5)
        )
        try:
            targets = answer_set(query, facts, plural=plural)
            if not _SIZE_OK[size](len(targets)) or not informative(query, facts, targets):
                continue
            text, answer = word_question(query, targets, plural, facts, rng)
        except Ambiguous:
            continue
        return Question(query, plural, targets, text, answer, (query.category, *extra))
    return None


# --- Vocabulary -----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Split text the way ``vocabulary()`` counts words: lower-case words, punctuation apart."""
    return _TOKEN.findall(text.lower())


def vocabulary() -> list[str]:
    """Every token any question or answer of the benchmark can contain, sorted.

    Built from the fixed word lists and templates themselves (not from generated samples), so a
    word-level tokenizer made from it covers every split of every seed.
    """
    pieces: list[str] = list(PALETTE) + list(NUMBERS.values())
    for noun in (*SHAPE_KINDS, *HEADS):
        pieces += [noun, plural_of(noun)]
    pieces += [fact.text for fact in SHAPE_FACTS + COLOUR_FACTS]
    pieces += [w for words in RELATION_WORDS.values() for w in words]
    pieces += [*NEAREST_WORDS, *COMPARE_WORDS, *EXCEPT_WORDS, *SOLE_WORDS]
    pieces += [w for words in EXTREME_WORDS.values() for w in words]
    pieces += ["between and", "smaller than", "only a", "colour shape", "that is not are not"]  # inline wording
    pieces += [*ASK_ONE, *ASK_MANY, *ANSWER_ONE, *ANSWER_MANY, *ANSWER_NONE_ONE, *ANSWER_NONE_MANY]
    pieces += [*POSITION_WORDS.values(), "the and ,"]
    return sorted({token for piece in pieces for token in tokenize(piece.replace("{}", " "))})
