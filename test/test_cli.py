"""``osprey-describe`` on a tiny checkpoint, and its messages for missing files."""

from __future__ import annotations

import shutil
import subprocess
import sys
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
