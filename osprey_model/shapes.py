"""A small world of overlapping coloured shapes, rendered with their visible masks.

The synthetic camera draws it, and the training package builds its Osprey-format data on it, so the
embedded default model and the demo's camera see the same world. Deterministic for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = ("circle", "square", "triangle", "star", "hexagon", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 215),
    "yellow": (230, 200, 30),
    "purple": (140, 60, 185),
    "orange": (240, 135, 25),
}
BACKGROUND = (228, 228, 222)


@dataclass
class Shape:
    category: str
    colour: str
    x: float  # centre, pixels
    y: float
    size: float  # circumradius, pixels
    angle: float = 0.0  # radians

    def outline(self) -> list[tuple[float, float]]:
        """Polygon vertices (the circle as a 48-gon)."""
        sides, radii, offset = {
            "circle": (48, (1.0,), 0.0),
            "square": (4, (1.0,), math.pi / 4),
            "triangle": (3, (1.0,), -math.pi / 2),
            "star": (10, (1.0, 0.45), -math.pi / 2),
            "hexagon": (6, (1.0,), 0.0),
            "diamond": (4, (1.0, 0.62), 0.0),
        }[self.category]
        points = []
        for i in range(sides):
            r = self.size * radii[i % len(radii)]
            a = self.angle + offset + 2 * math.pi * i / sides
            points.append((self.x + r * math.cos(a), self.y + r * math.sin(a)))
        return points


def render(shapes: list[Shape], width: int, height: int, noise: np.random.Generator | None = None):
    """Paint ``shapes`` in order (later on top). Returns the RGB image and each shape's *visible* mask."""
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    full_masks = []
    for shape in shapes:
        draw.polygon(shape.outline(), fill=COLOURS[shape.colour])
        layer = Image.new("L", (width, height), 0)
        ImageDraw.Draw(layer).polygon(shape.outline(), fill=255)
        full_masks.append(np.asarray(layer) > 0)
    visible = []
    covered = np.zeros((height, width), bool)
    for mask in reversed(full_masks):
        visible.append(mask & ~covered)
        covered |= mask
    image = np.asarray(canvas).copy()
    if noise is not None:
        image = np.clip(image.astype(np.int16) + noise.integers(-6, 7, image.shape), 0, 255).astype(np.uint8)
    return image, visible[::-1]


def random_shapes(
    rng: np.random.Generator, width: int, height: int, count: int, overlap: float = 0.5, distinct_colours: bool = False
) -> list[Shape]:
    """``count`` shapes with distinct (category, colour) pairs (with ``distinct_colours``, no two of one colour:
    two touching shapes of one colour read as one region, to a person too); ``overlap`` in [0, 1] pulls them
    together."""
    if distinct_colours:
        categories, colours = rng.permutation(len(CATEGORIES))[:count], rng.permutation(len(COLOURS))[:count]
        pairs = categories * len(COLOURS) + colours
    else:
        pairs = rng.permutation(len(CATEGORIES) * len(COLOURS))[:count]
    base = min(width, height)
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    shapes = []
    for pair in pairs:
        category, colour = CATEGORIES[pair // len(COLOURS)], list(COLOURS)[pair % len(COLOURS)]
        size = rng.uniform(0.12, 0.24) * base
        x = (1 - overlap) * rng.uniform(size, width - size) + overlap * (cx + rng.normal(0, 0.18 * width))
        y = (1 - overlap) * rng.uniform(size, height - size) + overlap * (cy + rng.normal(0, 0.18 * height))
        x, y = float(np.clip(x, size * 0.6, width - size * 0.6)), float(np.clip(y, size * 0.6, height - size * 0.6))
        shapes.append(Shape(category, colour, x, y, size, float(rng.uniform(0, 2 * math.pi / 3))))
    return shapes


def position_words(mask: np.ndarray) -> str:
    """Where a region lies in the picture, e.g. "top left", "middle", "bottom right"."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    col = ("left", "centre", "right")[min(int(3 * xs.mean() / width), 2)]
    row = ("top", "middle", "bottom")[min(int(3 * ys.mean() / height), 2)]
    if row == "middle" and col == "centre":
        return "centre"
    return f"{row} {col}" if row != "middle" else f"middle {col}"
