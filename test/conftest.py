"""Shared fixtures: a tiny checkpoint in the released layout, created once per test session."""

from __future__ import annotations

import os
from pathlib import Path

# Every ROS participant a test creates, in this process or a child, stays on this machine.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)
# The test's publishers stand in for camera drivers, which the README asks to use the shipped DDS profile.
os.environ.setdefault(
    "FASTDDS_DEFAULT_PROFILES_FILE", str(Path(__file__).resolve().parents[1] / "config" / "fastdds_large_data.xml")
)

import numpy as np
import pytest
import torch

from osprey_model import OspreyPredictor
from osprey_model.embedded import default_sam_checkpoint
from osprey_model.sam import SamSegmenter
from osprey_model.tiny import create_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_tiny_checkpoint(tmp_path_factory.mktemp("tiny-osprey"), seed=0)


@pytest.fixture(scope="session")
def tiny_predictor(tiny_dir: Path) -> OspreyPredictor:
    return OspreyPredictor.from_pretrained(tiny_dir)


@pytest.fixture(scope="session")
def shipped_sam() -> SamSegmenter:
    """The embedded tiny SAM this project trained and ships (osprey_model/checkpoints/tiny-sam)."""
    return SamSegmenter.from_pretrained("tiny", default_sam_checkpoint())


@pytest.fixture
def scene() -> tuple[np.ndarray, list[np.ndarray]]:
    """A 96×120 image with a red disk partly under a blue square, and the two visible masks."""
    height, width = 96, 120
    yy, xx = np.mgrid[:height, :width]
    disk = (yy - 40) ** 2 + (xx - 45) ** 2 < 28**2
    square = (np.abs(yy - 60) < 22) & (np.abs(xx - 80) < 22)
    image = np.full((height, width, 3), 230, np.uint8)
    image[disk] = (220, 30, 30)
    image[square] = (30, 60, 220)
    return image, [disk & ~square, square]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
