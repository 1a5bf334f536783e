"""Bad input gets a clear ValueError and leaves the predictor usable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osprey_model import OspreyPredictor
from osprey_model.image_processing import ImageLimits


@pytest.mark.parametrize(
    ("make_masks", "message"),
    [
        (lambda masks: [np.zeros((50, 50), bool)], r"mask 0 has shape \(50, 50\), the image is \(96, 120\)"),
        (lambda masks: [masks[0], np.zeros_like(masks[1])], "mask 1 is empty"),
        (lambda masks: [masks[0].astype(np.uint8) * 128 + 3], "mask 0 is not binary"),
        (lambda masks: [], "no masks given"),
        (lambda masks: np.zeros((2, 2, 96, 120)), "masks must be"),
    ],
    ids=["size-mismatch", "empty-mask", "non-binary", "zero-masks", "bad-rank"],
)
def test_bad_masks_are_refused_and_model_stays_usable(
    tiny_predictor: OspreyPredictor, scene, make_masks, message
) -> None:
    image, masks = scene
    with pytest.raises(ValueError, match=message):
        tiny_predictor.describe(image, make_masks(masks), max_new_tokens=2)
    assert len(tiny_predictor.describe(image, masks, max_new_tokens=2)) == 2


def test_more_regions_than_the_context_allows(tiny_predictor: OspreyPredictor, scene) -> None:
    image, masks = scene
    many = [masks[i % 2] for i in range(300)]
    with pytest.raises(ValueError, match="context allows 1024"):
        tiny_predictor.chat(image, many, [("What is <region1>?", None)], max_new_tokens=2)
    assert tiny_predictor.chat(image, masks, [("What is <region1>?", None)], max_new_tokens=2) is not None


def test_bad_images_and_arguments(tiny_predictor: OspreyPredictor, scene) -> None:
    image, masks = scene
    with pytest.raises(ValueError, match="uint8"):
        tiny_predictor.describe(image.astype(np.float32), masks)
    with pytest.raises(ValueError, match="RGB"):
        tiny_predictor.describe(np.zeros((96, 120, 4), np.uint8), masks)
    with pytest.raises(ValueError, match="max_new_tokens"):
        tiny_predictor.describe(image, masks, max_new_tokens=0)
    assert len(tiny_predictor.describe(image, masks, max_new_tokens=2)) == 2


def test_mask_encodings_agree(tiny_predictor: OspreyPredictor, scene) -> None:
    """bool, 0/1 and 0/255 masks are the same region."""
    image, masks = scene
    frame = tiny_predictor.encode(image)
    answers = [
        tiny_predictor.describe(frame, [m.astype(dtype) * scale for m in masks], max_new_tokens=4)
        for dtype, scale in ((bool, True), (np.uint8, 1), (np.uint8, 255), (np.float32, 1.0))
    ]
    assert all(a == answers[0] for a in answers)


def test_greedy_is_deterministic_and_reuses_frame(tiny_predictor: OspreyPredictor, scene) -> None:
    image, masks = scene
    direct = tiny_predictor.describe(image, masks, prompt="category", max_new_tokens=6)
    cached = tiny_predictor.describe(tiny_predictor.encode(image), masks, prompt="category", max_new_tokens=6)
    assert direct == cached and len(direct) == 2


def test_sampling_runs(tiny_predictor: OspreyPredictor, scene) -> None:
    image, masks = scene
    answers = tiny_predictor.describe(image, masks, max_new_tokens=4, temperature=0.7)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 60000), r"aspect ratio 30000.0 exceeds 32 \(max_aspect_ratio\)"), ((2, 4000), "aspect ratio 2000.0")],
)
def test_absurd_image_shapes_are_refused_before_any_resize(tiny_predictor: OspreyPredictor, shape, message) -> None:
    """The shortest-edge resize of a 2×60000 image asked 11 GiB: refused up front, the predictor stays usable."""
    image = np.zeros((*shape, 3), np.uint8)
    mask = np.zeros(shape, bool)
    mask[:, :10] = True
    with pytest.raises(ValueError, match=message):
        tiny_predictor.describe(image, [mask], max_new_tokens=2)


def test_pixel_limit_is_configurable(tiny_dir) -> None:
    predictor = OspreyPredictor.from_pretrained(tiny_dir, image_limits=ImageLimits(max_pixels=1000))
    with pytest.raises(ValueError, match=r"more than the 1000 allowed \(max_image_pixels\)"):
        predictor.encode(np.zeros((40, 30, 3), np.uint8))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 1), (3, 3)])
def test_tiny_and_thin_images_are_described(tiny_predictor: OspreyPredictor, shape) -> None:
    """1×N and 3×N images were taken for channels-first ("mean must have 1 elements", or silently wrong)."""
    image = np.full((*shape, 3), 200, np.uint8)
    frame = tiny_predictor.encode(image)
    expected = tiny_predictor.encode(np.full((4, 4, 3), 200, np.uint8))  # a flat colour is a flat colour
    assert torch.allclose(frame.features.image_tokens, expected.features.image_tokens, atol=1e-4)
    assert len(tiny_predictor.describe(frame, [np.ones(shape, bool)], max_new_tokens=2)) == 1
