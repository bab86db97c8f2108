"""The `shapes` benchmark: a procedurally generated reasoning-segmentation world.

Scenes of flat-coloured shapes on textured backgrounds (``scene``, ``render``), questions written
from the scene graph with exactly one answer set each (``questions``), and the ``make-shapes``
sub-command that writes splits in the common data format (``generate``).
"""

from llmseg.data.shapes.generate import generate_sample, make_shapes, register
from llmseg.data.shapes.questions import TAGS, tokenize, vocabulary
from llmseg.data.shapes.scene import PALETTE, SHAPE_KINDS

__all__ = [
    "PALETTE",
    "SHAPE_KINDS",
    "TAGS",
    "generate_sample",
    "make_shapes",
    "register",
    "tokenize",
    "vocabulary",
]
