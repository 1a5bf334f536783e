"""``osprey-segment`` on a tiny released-layout LISA, as a user runs it (its own process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osprey_model.lisa.tiny import create_tiny_lisa


@pytest.fixture(scope="module")
def lisa(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("lisa-cli")
    model_dir, clip_dir = create_tiny_lisa(root, answer_chain=["[SEG]", "▁and", "[SEG]"])
    image = root / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(image)
    return model_dir, clip_dir, image


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osprey_model.lisa.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_masks_are_written_and_the_answer_printed(lisa, tmp_path: Path) -> None:
    model_dir, clip_dir, image = lisa
    args = ["--model", str(model_dir), "--clip", str(clip_dir), "--image", str(image), "--out", str(tmp_path)]
    result = run(*args, "--query", "Segment both red shapes.", "--max-new-tokens", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "answer: [SEG] and [SEG]"
    assert [line.split(":")[0] for line in lines[1:]] == [str(tmp_path / "mask_0.png"), str(tmp_path / "mask_1.png")]
    for path in ("mask_0.png", "mask_1.png"):
        assert np.asarray(Image.open(tmp_path / path)).shape == (120, 160)

    one = run(*args, "--query", "Anything?", "--max-new-tokens", "1")
    assert one.returncode == 0 and one.stdout.splitlines()[0] == "answer: [SEG]" and len(one.stdout.splitlines()) == 2


def test_an_answer_without_seg_writes_no_mask(tmp_path: Path, lisa) -> None:
    model_dir, _ = create_tiny_lisa(tmp_path / "sure", answer_chain=["▁Sure", ",", "[SEG]", ".", "</s>"])
    image = lisa[2]
    args = ["--model", str(model_dir), "--image", str(image), "--out", str(tmp_path / "out"), "--query", "Where?"]
    result = run(*args, "--max-new-tokens", "2")  # "Sure," and no further
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["answer: Sure,", "no [SEG] in the answer: no mask"]
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--query", "  "], "empty query"),
        (["--query", "where?", "--model", "/nowhere"], "config.json not found"),
        (["--query", "where?", "--image", "/nowhere.png"], "image not found"),
    ],
)
def test_errors_are_one_line_without_a_traceback(lisa, args: list[str], message: str) -> None:
    model_dir, clip_dir, image = lisa
    base = {"--model": str(model_dir), "--clip": str(clip_dir), "--image": str(image)}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    result = run(*[item for pair in base.items() for item in pair])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("osprey-segment: error: ") and message in lines[0], result.stderr
