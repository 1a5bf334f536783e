"""Reasoning-segmentation queries about shapes-world scenes: the shape is never named, it must be worked out.

Four kinds, each with training sentence templates and held-out ones (``held_out=True``) that the model
never sees:

- colour by world knowledge: "the shape the colour of a ripe banana" → the yellow one;
- geometry: "the shape with three corners" → the triangle;
- relations: "the shape left of the blue square", "the one partly hidden by the star";
- several targets: "both red shapes" → two masks, two ``[SEG]`` in the answer, left to right.

The facts themselves (a banana is yellow, a honeycomb cell has six sides) are all taught: a model trained
from scratch on this world knows no fact it has not read, so held-out queries put known facts into
sentences never seen, on scenes never seen.

A query is only made when exactly its targets fit it in the scene (the one yellow shape, the one shape left
of every other, ...), so every answer is unambiguous.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import ndimage

from osprey_model.shapes import Shape

COLOUR_KNOWLEDGE = {
    "red": (["a ripe tomato", "a fire engine"], ["a strawberry"]),
    "green": (["fresh grass", "a lime"], ["a frog"]),
    "blue": (["a clear sky", "the deep sea"], ["a blueberry"]),
    "yellow": (["a ripe banana", "a lemon"], ["a school bus"]),
    "purple": (["an aubergine", "a plum"], ["lavender"]),
    "orange": (["a carrot", "a pumpkin"], ["a tangerine"]),
}
GEOMETRY = {
    "triangle": (["three corners", "three straight sides"], ["three vertices"]),
    "square": (["four equal sides and four right angles", "four right angles"], ["the corners of a chessboard square"]),
    "circle": (["no corners at all", "one round edge"], ["no straight edge"]),
    "star": (["five points", "pointed arms"], ["the outline of a starfish"]),
    "hexagon": (["six sides", "six corners"], ["the outline of a honeycomb cell"]),
    "diamond": (["the outline of a kite", "four sides but no right angle"], ["the shape of a rhombus"]),
}
TEMPLATES = {
    "colour": (["Segment the shape that has the colour of {thing}.", "Which shape is the colour of {thing}?"],
               ["Find the shape coloured like {thing}."]),
    "geometry": (["Segment the shape with {feature}.", "Which shape has {feature}?"],
                 ["Point out the shape that has {feature}."]),
    "left_of": (["Segment the shape left of the {colour} {category}.",
                 "Which shape is just left of the {colour} {category}?"],
                ["Find the shape to the left of the {colour} {category}."]),
    "hidden_by": (["Segment the shape partly hidden by the {category}.", "Which shape does the {category} cover?"],
                  ["Find the shape that lies under the {category}."]),
    "both": (["Segment both {colour} shapes.", "Where are the two {colour} shapes?"],
             ["Show me the pair of {colour} shapes."]),
    "name": (["Segment the {colour} {category}.", "Where is the {colour} {category}?"], []),
}  # fmt: skip
SUFFIX = " Please output segmentation mask."
MIN_VISIBLE_PIXELS = 30


@dataclass
class ShapesQuery:
    kind: str
    query: str
    targets: list[int]  # indices into the scene's shapes, in [SEG] order
    shapes: list[Shape] = field(repr=False)
    masks: list[np.ndarray] = field(repr=False)

    @cached_property
    def answer(self) -> str:
        """e.g. "Sure, the yellow star (column 3, row 5) [SEG]."; made on first use (only the query a sample
        keeps needs one)."""
        return answer_for(self.shapes, self.masks, self.targets)


def _pick(rng: np.random.Generator, pair: tuple[list[str], list[str]], held_out: bool) -> str:
    choices = pair[1] if held_out else pair[0]
    return choices[int(rng.integers(len(choices)))]


def _fact(rng: np.random.Generator, pair: tuple[list[str], list[str]]) -> str:
    """Any phrasing of a fact, training or held-out query alike (see the module's docstring)."""
    choices = [*pair[0], *pair[1]]
    return choices[int(rng.integers(len(choices)))]


GRID = 8  # the answer's coarse location: column and row of the shape's innermost point on an 8 x 8 grid


def innermost_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the pixel farthest from the mask's edge: a click that surely lands on the object."""
    distance = ndimage.distance_transform_edt(np.pad(mask > 0, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    return float(x), float(y)


def answer_for(shapes: list[Shape], masks: list[np.ndarray], targets: list[int]) -> str:
    """The answer says what it found and roughly where, then segments it ("Sure, the yellow star (column 3,
    row 5) [SEG]."): name and place are the reasoning's result, learned as text (a dense signal), and the
    ``[SEG]`` state right after them points SAM at that shape."""
    parts = []
    for i in targets:
        x, y = innermost_point(masks[i])
        height, width = masks[i].shape
        column, row = int(x * GRID / width), int(y * GRID / height)
        parts.append(f"the {shapes[i].colour} {shapes[i].category} (column {column}, row {row}) [SEG]")
    return "Sure, " + " and ".join(parts) + "."


def candidate_queries(
    shapes: list[Shape], masks: list[np.ndarray], rng: np.random.Generator, held_out: bool = False
) -> list[ShapesQuery]:
    """Every unambiguous query this scene allows (``masks``: the visible masks, in ``shapes``' order). Shapes
    hidden below 30 pixels are not there for the camera: they are neither asked about nor counted. Training
    phrasings also include "name" queries ("Segment the yellow star."), the shapes world's semantic
    segmentation: the step before reasoning."""
    out = []
    visible = [i for i, mask in enumerate(masks) if mask.sum() >= MIN_VISIBLE_PIXELS]
    colours = [shapes[i].colour if i in visible else None for i in range(len(shapes))]
    categories = [shapes[i].category if i in visible else None for i in range(len(shapes))]
    for i in visible:
        shape = shapes[i]
        if colours.count(shape.colour) == 1:
            thing = _fact(rng, COLOUR_KNOWLEDGE[shape.colour])
            text = _pick(rng, TEMPLATES["colour"], held_out).format(thing=thing)
            out.append(ShapesQuery("colour", text + SUFFIX, [i], shapes, masks))
        if categories.count(shape.category) == 1:
            feature = _fact(rng, GEOMETRY[shape.category])
            text = _pick(rng, TEMPLATES["geometry"], held_out).format(feature=feature)
            out.append(ShapesQuery("geometry", text + SUFFIX, [i], shapes, masks))
        if not held_out:
            text = _pick(rng, TEMPLATES["name"], held_out).format(colour=shape.colour, category=shape.category)
            out.append(ShapesQuery("name", text + SUFFIX, [i], shapes, masks))
    centres = {i: float(np.nonzero(masks[i])[1].mean()) for i in visible}
    order = sorted(visible, key=centres.__getitem__)
    for left, right in itertools.pairwise(order):  # the shape just left of another one
        if centres[right] - centres[left] > 0.08 * masks[0].shape[1]:
            anchor = shapes[right]
            text = _pick(rng, TEMPLATES["left_of"], held_out).format(colour=anchor.colour, category=anchor.category)
            out.append(ShapesQuery("left_of", text + SUFFIX, [left], shapes, masks))
    for top in visible:  # later shapes are drawn on top
        occluder = shapes[top]
        hidden = [i for i in visible if i < top and _covers(masks, shapes, i, top)]
        if len(hidden) == 1 and categories.count(occluder.category) == 1:
            text = _pick(rng, TEMPLATES["hidden_by"], held_out).format(category=occluder.category)
            out.append(ShapesQuery("hidden_by", text + SUFFIX, hidden, shapes, masks))
    for colour in sorted({c for c in colours if c is not None}):  # sorted: set order changes per process
        pair = [i for i, c in enumerate(colours) if c == colour]
        if len(pair) == 2:
            pair.sort(key=lambda i: centres[i])
            text = _pick(rng, TEMPLATES["both"], held_out).format(colour=colour)
            out.append(ShapesQuery("both", text + SUFFIX, pair, shapes, masks))
    return out


def _covers(masks: list[np.ndarray], shapes: list[Shape], below: int, above: int) -> bool:
    """Whether shape ``above`` hides a real part (≥ 15 %) of shape ``below``, which stays visible."""
    from osprey_model.shapes import render

    height, width = masks[0].shape
    _, alone = render([shapes[below]], width, height)
    full = alone[0]
    _, pair = render([shapes[below], shapes[above]], width, height)
    hidden = full.sum() - pair[0].sum()
    return bool(full.sum()) and 0.15 * full.sum() <= hidden
