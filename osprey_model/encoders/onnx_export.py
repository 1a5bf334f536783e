"""ONNX export of the ConvNeXt trunk with its four stage outputs (kept apart from the modeling code)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from ..config import FEATURE_LEVELS
from ..vision_tower import ClipConvNeXtVisionTower


class _StageOutputs(nn.Module):
    """The tower as a module with a tuple output, which exporters need."""

    def __init__(self, tower: ClipConvNeXtVisionTower) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.tower(pixel_values)
        return tuple(features[name] for name in FEATURE_LEVELS)


def tower_fingerprint(tower: ClipConvNeXtVisionTower) -> str:
    """A hash of the tower's weights and input size: engines and exports are cached under it."""
    digest = hashlib.sha256(f"{tower.config.image_size}".encode())
    for name, tensor in tower.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def export_onnx(tower: ClipConvNeXtVisionTower, path: str | Path, batch_size: int = 1, opset: int = 18) -> Path:
    """A static-shape (batch_size, 3, S, S) fp32 graph with outputs named res2..res5."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = tower.config.image_size
    dummy = torch.zeros(batch_size, 3, size, size)
    module = _StageOutputs(tower).eval().float()
    with torch.no_grad():
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=["pixel_values"],
            output_names=list(FEATURE_LEVELS),
            opset_version=opset,
            dynamo=False,
        )
    return path
