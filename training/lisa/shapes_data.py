"""Reasoning-segmentation samples from the shapes world, generated on the fly and deterministic for a seed.

Each sample is a scene (image, its shapes and their visible masks), one unambiguous query about it and the
target mask(s) in ``[SEG]`` order. The query kind is drawn first (uniform over the kinds the scene allows)
so that rare kinds ("both red shapes", "hidden by") are not drowned by colour and geometry queries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from osprey_model.shapes import CATEGORIES, COLOURS, Shape
from osprey_model.shapes_queries import ShapesQuery, candidate_queries

from ..shapes_world import scene

KINDS = ("colour", "geometry", "left_of", "hidden_by", "both")  # the reasoning kinds (evaluated); training adds "name"
EVAL_SEED = 20_000  # the card's held-out scenes; training streams are default_rng(seed) with small seeds
VALIDATION_SEED = 30_000  # what a run may choose by or check itself on: scenes neither training nor the card draws


@dataclass
class ShapesSample:
    image: np.ndarray  # (H, W, 3) uint8
    shapes: list[Shape]
    masks: list[np.ndarray]  # visible mask of every shape, in ``shapes``' order
    query: ShapesQuery

    @property
    def targets(self) -> list[np.ndarray]:
        return [self.masks[i] for i in self.query.targets]


def shapes_sample(rng: np.random.Generator, held_out: bool = False, kind: str | None = None) -> ShapesSample:
    """One scene and one query about it (of ``kind`` if given; scenes that do not allow it are redrawn)."""
    while True:
        image, visible, _, shapes = scene(rng, overlap=float(rng.uniform(0.0, 0.6)))
        queries = candidate_queries(shapes, visible, rng, held_out=held_out)
        kinds = sorted({q.kind for q in queries}) if kind is None else [kind]
        chosen = [q for q in queries if q.kind == kinds[int(rng.integers(len(kinds)))]] if kinds else []
        if chosen:
            return ShapesSample(image, shapes, visible, chosen[int(rng.integers(len(chosen)))])


def answer_token_classes(tokenizer: PreTrainedTokenizerBase) -> dict[str, set[int]]:
    """Token ids of an answer's name (colour and kind words) and place (any token holding a column or row
    digit); the rest is the template. Where an answer's loss sits says which step of the reasoning a model
    lacks: naming the meant shape, or reading where it is."""
    names = {i for word in (*COLOURS, *CATEGORIES) for i in tokenizer(" " + word, add_special_tokens=False).input_ids}
    places = {i for token, i in tokenizer.get_vocab().items() if any(ch.isdigit() for ch in token)}
    return {"name": names - places, "place": places}


def shapes_samples(seed: int, held_out: bool = False) -> Iterator[ShapesSample]:
    rng = np.random.default_rng(seed)
    while True:
        yield shapes_sample(rng, held_out)


def corpus(seed: int = 0, count: int = 4000) -> list[str]:
    """Every text the tiny model reads or writes (training and held-out phrasings), for its tokenizer."""
    from osprey_model.conversation import SYSTEM

    rng = np.random.default_rng(seed)
    texts = [SYSTEM + " USER:", "ASSISTANT:", "Sure, [SEG]."]
    for i in range(count):
        sample = shapes_sample(rng, held_out=bool(i % 2))
        texts += [sample.query.query + " ASSISTANT:", sample.query.answer]
    return texts
