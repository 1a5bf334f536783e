"""The embedded default model: shipped small and in safetensors, and it names what it sees."""

from __future__ import annotations

import json

import numpy as np
import pytest

from osprey_model import OspreyPredictor
from osprey_model.embedded import EMBEDDED_CHECKPOINT, default_checkpoint
from osprey_model.shapes import CATEGORIES, COLOURS
from training.evaluation.mask_vs_box import first_word
from training.shapes_world import scene


def test_shipped_files_are_small_and_safe() -> None:
    files = {p.name: p.stat().st_size for p in EMBEDDED_CHECKPOINT.iterdir()}
    assert sum(files.values()) < 10 * 2**20
    assert "model.safetensors" in files and "README.md" in files and "eval_results.json" in files
    assert not [name for name in files if name.endswith((".pt", ".pth", ".ckpt"))]
    card = (EMBEDDED_CHECKPOINT / "README.md").read_text()
    command = json.loads((EMBEDDED_CHECKPOINT / "eval_results.json").read_text())["command"]
    assert command.startswith("python -m training.train_tiny") and command in card


@pytest.fixture(scope="module")
def predictor() -> OspreyPredictor:
    return OspreyPredictor.from_pretrained(default_checkpoint())


def test_names_colours_and_shapes_on_fresh_scenes(predictor: OspreyPredictor) -> None:
    """Scenes it never saw (another seed, shapes apart): colour and shape right far above chance (1/6)."""
    rng = np.random.default_rng(2024)
    colours = categories = named = regions = 0
    for _ in range(20):
        image, masks, _, shapes = scene(rng, overlap=0.0)
        for answer, shape in zip(predictor.describe(image, masks, max_new_tokens=8), shapes, strict=True):
            regions += 1
            colours += first_word(answer, COLOURS) == shape.colour
            named += first_word(answer, CATEGORIES) is not None
            categories += first_word(answer, CATEGORIES) == shape.category
    print(
        f"embedded model on {regions} fresh regions: colour {colours / regions:.2f}, shape {categories / regions:.2f}"
    )
    assert colours / regions >= 0.8
    assert categories / regions >= 0.5  # 0.67 measured; shapes are the harder half (see the model card)
    assert named == regions  # every short description names a shape
