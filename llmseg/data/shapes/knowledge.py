"""World knowledge for `implicit` questions: what things look like, what colour they are.

Each fact is a post-modifier a question can attach to a noun ("object that could roll", "star
coloured like a lemon") and the shape kinds or colours it picks out. Facts only name what a
person would agree on; where knowledge is fuzzy (is pink a warm colour?) there is no fact.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    """World knowledge as a post-modifier ("that could roll", "coloured like a lemon") and the
    kinds or colours it picks out."""

    text: str
    kinds: frozenset[str] | None = None
    colours: frozenset[str] | None = None

    def matches(self, kind: str, colour: str) -> bool:
        return (self.kinds is None or kind in self.kinds) and (self.colours is None or colour in self.colours)


_SHAPE_LIKE = ("shaped like {}", "with the shape of {}", "resembling {}")
_COLOUR_LIKE = ("with the colour of {}", "coloured like {}", "the colour of {}")
_SHAPE_THINGS: dict[str, tuple[str, ...]] = {
    "circle": ("a coin", "a full moon"),
    "ring": ("a donut", "a tyre"),
    "square": ("a sticky note",),
    "triangle": ("a slice of pizza", "a warning sign"),
    "star": ("a starfish", "a sheriff badge"),
    "hexagon": ("a honeycomb cell",),
    "cross": ("a plus sign", "a first aid symbol"),
    "heart": ("a valentine",),
    "diamond": ("a kite",),
    "crescent": ("a croissant", "a banana"),
}
_SHAPE_PROPERTIES: dict[str, tuple[str, ...]] = {
    "that could roll": ("circle", "ring"),
    "with no corners": ("circle", "ring"),
    "with a hole in the middle": ("ring",),
    "used as a symbol of love": ("heart",),
    "with three corners": ("triangle",),
    "with exactly four corners": ("square", "diamond"),
    "with five points": ("star",),
    "with six corners": ("hexagon",),
    "with more than four corners": ("hexagon", "star", "cross"),
    "with only straight edges": ("triangle", "square", "diamond", "hexagon", "star", "cross"),
    "with curved edges": ("circle", "ring", "heart", "crescent"),
}
_COLOUR_THINGS: dict[str, tuple[str, ...]] = {
    "red": ("a ripe tomato", "a fire truck", "a strawberry"),
    "orange": ("a carrot", "a pumpkin"),
    "yellow": ("a ripe banana", "a lemon"),
    "green": ("fresh grass", "a lettuce leaf"),
    "blue": ("a sapphire", "a blueberry"),
    "purple": ("an eggplant", "lavender"),
    "pink": ("a flamingo", "bubble gum"),
    "cyan": ("a swimming pool",),
}
_COLOUR_PROPERTIES: dict[str, tuple[str, ...]] = {"in a traffic light colour": ("red", "yellow", "green")}


def _facts() -> tuple[list[Fact], list[Fact]]:
    shape_facts = [
        Fact(form.format(thing), kinds=frozenset([kind]))
        for kind, things in _SHAPE_THINGS.items()
        for thing in things
        for form in _SHAPE_LIKE
    ]
    shape_facts += [Fact(text, kinds=frozenset(kinds)) for text, kinds in _SHAPE_PROPERTIES.items()]
    colour_facts = [
        Fact(form.format(thing), colours=frozenset([colour]))
        for colour, things in _COLOUR_THINGS.items()
        for thing in things
        for form in _COLOUR_LIKE
    ]
    colour_facts += [Fact(text, colours=frozenset(colours)) for text, colours in _COLOUR_PROPERTIES.items()]
    return shape_facts, colour_facts


SHAPE_FACTS, COLOUR_FACTS = _facts()
