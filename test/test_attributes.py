"""Typed attributes: one batched question per attribute for all regions of a frame, on the shipped model."""

from __future__ import annotations

import pytest

from osprey_model import FrameFeatures, OspreyPredictor
from osprey_model.conversation import ATTRIBUTE_QUESTIONS, MASK_TOKEN
from osprey_model.embedded import default_checkpoint
from osprey_model.shapes import Shape, render
from osprey_ros.parameters import check_value
from osprey_ros.region_describer import RegionDescriber


@pytest.fixture(scope="module")
def shipped() -> OspreyPredictor:
    return OspreyPredictor.from_pretrained(default_checkpoint())


def scene():
    shapes = [
        Shape("circle", "red", 60, 60, 40),
        Shape("square", "blue", 200, 120, 40),
        Shape("star", "green", 120, 170, 45),
    ]
    return render(shapes, 320, 240)


def test_every_attribute_question_shares_one_prefix_across_regions() -> None:
    for name, question in ATTRIBUTE_QUESTIONS.items():
        assert "<region" not in question.replace("<region>", ""), name  # only the one-region reference
        assert question.count(MASK_TOKEN) == 1 or "<region>" in question, name


def test_attributes_are_asked_once_per_question_for_all_regions(shipped: OspreyPredictor) -> None:
    image, masks = scene()
    describer = RegionDescriber(shipped, "short", 8, ("category", "colour", "material"))
    cache = shipped.prefix_cache
    misses, hits = cache.misses, cache.hits
    regions = describer.describe(FrameFeatures(image), masks, [4, 5, 6])
    # Four batched questions (label, category, colour, material); colour and material, both in the
    # conversation form, even share their prefix up to <mask>: three prefills, one reuse.
    assert (cache.misses - misses, cache.hits - hits) == (3, 1)
    assert [r.id for r in regions] == [4, 5, 6]
    assert all(set(r.attributes) == {"category", "colour", "material"} for r in regions)
    assert [r.attributes["category"] for r in regions] == ["circle", "square", "star"]  # the shipped model knows
    assert all(0.5 < r.confidence <= 1.0 for r in regions)


def test_category_mode_does_not_ask_the_category_twice(shipped: OspreyPredictor) -> None:
    image, masks = scene()
    describer = RegionDescriber(shipped, "category", 8, ("category",))
    misses = shipped.prefix_cache.misses
    regions = describer.describe(FrameFeatures(image), masks, [0, 1, 2])
    assert shipped.prefix_cache.misses - misses == 1
    assert [r.attributes["category"] for r in regions] == [r.label for r in regions]


def test_unknown_attributes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown attributes \\['size'\\]"):
        RegionDescriber(None, "short", 8, ("size",))  # type: ignore[arg-type]
    for bad in (["size"], [], ["colour", "weight"]):
        with pytest.raises(ValueError, match="parameter attributes"):
            check_value("attributes", bad)
    check_value("attributes", ["none"])
    check_value("attributes", ["category", "colour", "material", "state"])
