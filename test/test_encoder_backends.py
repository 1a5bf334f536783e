"""Encoder backends: ONNX export parity with torch (via ONNX Runtime) and the fallback chain."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from osprey_model import OspreyPredictor
from osprey_model.config import FEATURE_LEVELS, get_preset
from osprey_model.encoders import OnnxRuntimeEncoder, backends, create_encoder, export_onnx
from osprey_model.vision_tower import ClipConvNeXtVisionTower


@pytest.fixture(scope="module")
def tower() -> ClipConvNeXtVisionTower:
    torch.manual_seed(0)
    return ClipConvNeXtVisionTower(get_preset("tiny").vision).eval()


def test_onnx_export_has_four_stage_outputs_and_matches_torch(tower, tmp_path: Path) -> None:
    path = export_onnx(tower, tmp_path / "trunk.onnx")
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == list(FEATURE_LEVELS)
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 128, 128]
    pixels = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected = tower(pixels)
    got = OnnxRuntimeEncoder(path, torch.device("cpu"), FEATURE_LEVELS)(pixels)
    for name in FEATURE_LEVELS:
        assert got[name].shape == expected[name].shape
        assert (got[name] - expected[name]).abs().max().item() <= 1e-4


def test_tensorrt_falls_back_with_one_log_line(tower, tmp_path: Path, caplog) -> None:
    pytest.importorskip("onnxruntime")
    if importable("tensorrt"):
        pytest.skip("tensorrt is installed here: no fallback to check")
    caplog.set_level(logging.WARNING)
    encoder = create_encoder("tensorrt", tower, cache_dir=tmp_path)
    assert encoder.name == "onnxruntime"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "convnext encoder backend tensorrt unavailable (tensorrt is not importable); falling back to onnxruntime on cpu"
    ]
    again = create_encoder("onnxruntime", tower, cache_dir=tmp_path)  # the export is cached by model hash
    assert len(list(tmp_path.glob("convnext-*.onnx"))) == 1 and again.name == "onnxruntime"


def test_a_gpu_model_falls_back_to_gpu_backends_only(tower, tmp_path: Path, caplog, monkeypatch) -> None:
    """PyPI's onnxruntime is CPU-only: a CUDA model must not end up with its encoder on the CPU unasked."""
    pytest.importorskip("onnxruntime")
    if importable("tensorrt") or "CUDAExecutionProvider" in backends.onnx_providers_available():
        pytest.skip("a GPU stack is installed here: no fallback to check")
    monkeypatch.setattr(backends, "tower_device", lambda tower: torch.device("cuda"))
    caplog.set_level(logging.WARNING)
    assert create_encoder("tensorrt", tower, cache_dir=tmp_path).name == "torch"
    assert [r.getMessage() for r in caplog.records] == [
        "convnext encoder backend tensorrt unavailable (tensorrt is not importable); falling back to torch on cuda"
    ]
    caplog.clear()
    with pytest.raises(backends.BackendUnavailable, match="no CUDA provider"):
        backends.onnxruntime_providers(torch.device("cuda"), allow_cpu_for_gpu_model=False)
    asked = create_encoder("onnxruntime", tower, cache_dir=tmp_path)  # asked by name: CPU, and said so
    assert asked.name == "onnxruntime" and "runs on the CPU behind a cuda model" in caplog.text
    assert backends.fallback_for("tensorrt", "cpu") == "onnxruntime"


def test_compile_on_cpu_falls_back_to_torch(tower, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    assert create_encoder("compile", tower, cache_dir=tmp_path).name == "torch"
    assert "convnext encoder backend compile unavailable" in caplog.text
    with pytest.raises(ValueError, match="encoder backend must be one of"):
        create_encoder("tflite", tower, cache_dir=tmp_path)


def test_predictor_answers_the_same_with_onnxruntime(tiny_dir: Path, scene, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("osprey_model.encoders.backends.DEFAULT_CACHE", tmp_path)
    image, masks = scene
    torch_predictor = OspreyPredictor.from_pretrained(tiny_dir)
    ort_predictor = OspreyPredictor.from_pretrained(tiny_dir, encoder_backend="onnxruntime")
    assert ort_predictor.encoder.name == "onnxruntime"
    a, b = torch_predictor.encode(image), ort_predictor.encode(image)
    np.testing.assert_allclose(a.features.image_tokens.numpy(), b.features.image_tokens.numpy(), atol=1e-4)
    assert torch_predictor.describe(a, masks, max_new_tokens=4) == ort_predictor.describe(b, masks, max_new_tokens=4)


def importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
