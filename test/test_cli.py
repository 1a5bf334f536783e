"""``osprey-describe`` on a tiny checkpoint, and its messages for missing files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from osprey_model.cli import main
from osprey_model.tiny import CLIP_FILE, write_demo_inputs


def test_one_line_per_region(tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, masks = write_demo_inputs(tmp_path)
    args = ["--model", str(tiny_dir), "--image", str(image), "--max-new-tokens", "4"]
    assert main(args + [arg for m in masks for arg in ("--mask", str(m))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [m.name for m in masks]


def test_missing_weights_say_what_and_where(tmp_path: Path, tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, masks = write_demo_inputs(tmp_path / "in")
    base = ["--image", str(image), "--mask", str(masks[0])]
    assert main(["--model", str(tmp_path / "nowhere"), *base]) == 2
    assert "config.json not found" in capsys.readouterr().err

    no_clip = tmp_path / "no-clip"
    shutil.copytree(tiny_dir, no_clip)
    (no_clip / CLIP_FILE).unlink()
    assert main(["--model", str(no_clip), *base]) == 2
    err = capsys.readouterr().err
    assert "open_clip_pytorch_model.bin" in err and "--clip" in err

    assert main(["--model", str(no_clip), "--clip", str(tiny_dir / CLIP_FILE), *base]) == 0


def test_bad_mask_file_is_an_error(tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, _ = write_demo_inputs(tmp_path)
    assert main(["--model", str(tiny_dir), "--image", str(image), "--mask", str(tmp_path / "missing.png")]) == 2
    assert "mask not found" in capsys.readouterr().err
