"""``osprey-describe`` on a tiny checkpoint, and its messages for missing files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """As a user runs it: its own process, so an escaping exception shows as a traceback and exit code."""
    return subprocess.run(
        [sys.executable, "-m", "osprey_model.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )


def _corrupt(kind: str, tiny_dir: Path, tmp_path: Path) -> tuple[Path, Path, str]:
    """A broken copy of the checkpoint (or a broken image) and the text the one-line error must hold."""
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    image, _ = write_demo_inputs(tmp_path / "in")
    weights = model / "model.safetensors"
    if kind == "non-image":
        image = tmp_path / "notes.png"
        image.write_text("this is not a picture\n")
        return model, image, f"image {image} is not a readable image"
    if kind == "zero-byte-safetensors":
        weights.write_bytes(b"")
        return model, image, f"cannot read {weights}"
    if kind == "truncated-safetensors":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return model, image, f"cannot read {weights}"
    (model / "config.json").write_text('{"model_type": "osprey", "hidden_size": 64,')  # cut short
    return model, image, f"{model / 'config.json'}: not a valid Osprey config.json"


@pytest.mark.parametrize("kind", ["non-image", "zero-byte-safetensors", "truncated-safetensors", "broken-config"])
def test_broken_inputs_give_one_line_and_no_traceback(kind: str, tiny_dir: Path, tmp_path: Path) -> None:
    model, image, expected = _corrupt(kind, tiny_dir, tmp_path)
    mask = write_demo_inputs(tmp_path / "masks")[1][0]
    result = run_cli("--model", str(model), "--image", str(image), "--mask", str(mask))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("osprey-describe: error: "), result.stderr
    assert expected in lines[0], lines[0]


def read_mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_clicks_and_boxes_segment_with_the_embedded_sam(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, mask_files = write_demo_inputs(tmp_path)
    disk, square = (read_mask(path) for path in mask_files)
    base = ["--model", str(tiny_dir), "--image", str(image), "--max-new-tokens", "3"]
    assert main([*base, "--point", "100,90", "--point", "210,150", "--save-masks", str(tmp_path / "clicks")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(re.match(r"region \d \(score [\d.]+\): .+", line) for line in lines), lines
    assert iou(read_mask(tmp_path / "clicks" / "region_0.png"), disk) > 0.7
    assert iou(read_mask(tmp_path / "clicks" / "region_1.png"), square) > 0.7

    assert main([*base, "--box", "150,90,270,210", "--save-masks", str(tmp_path / "box")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert iou(read_mask(tmp_path / "box" / "region_0.png"), square) > 0.7


def test_everything_finds_both_shapes(tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, mask_files = write_demo_inputs(tmp_path)
    args = ["--model", str(tiny_dir), "--image", str(image), "--everything", "--save-masks", str(tmp_path / "all")]
    assert main([*args, "--max-new-tokens", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    found = [read_mask(path) for path in sorted((tmp_path / "all").glob("region_*.png"))]
    assert len(lines) == len(found) >= 2
    for path in mask_files:
        assert max(iou(read_mask(path), mask) for mask in found) > 0.7

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((240, 320, 3), 228, np.uint8)).save(blank)
    assert main(["--model", str(tiny_dir), "--image", str(blank), "--everything"]) == 0
    assert capsys.readouterr().out.strip() == "no region found"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--point", "900,10"], r"point \(900, 10\) lies outside the 320x240 image"),
        (["--box", "100,100,50,150"], "is empty or inverted"),
        (["--point", "0,0,0"], "only negative clicks"),
    ],
)
def test_bad_prompts_are_one_line_errors(flags: list[str], message: str, tiny_dir: Path, tmp_path: Path) -> None:
    image, _ = write_demo_inputs(tmp_path)
    result = run_cli("--model", str(tiny_dir), "--image", str(image), *flags)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert re.search(message, result.stderr), result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "give regions one way"),
        (["--everything", "--point", "1,2"], "give regions one way"),
        (["--point", "1,2,5"], "a point's label is 1"),
        (["--point", "1"], "a point \\(X,Y\\[,LABEL\\]\\) must be 2 or 3 numbers"),
        (["--box", "1,2,3"], "a box \\(X0,Y0,X1,Y1\\) must be 4 numbers"),
        (["--box", "1,2,30,40", "--box", "5,5,9,9", "--point", "3,3"], "with several --box, give no --point"),
    ],
)
def test_malformed_region_flags_are_refused(flags: list[str], message: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--image", str(tmp_path / "x.png"), *flags])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
