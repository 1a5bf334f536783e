"""ONNX export of an image encoder with its named outputs (kept apart from the modeling code)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from .interface import ImageEncoderModule


class _TupleOutputs(nn.Module):
    """The encoder as a module with a tuple output, which exporters need."""

    def __init__(self, encoder: ImageEncoderModule) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.encoder(pixel_values)
        return tuple(features[name] for name in self.encoder.output_names)


def encoder_fingerprint(encoder: ImageEncoderModule) -> str:
    """A hash of the encoder's weights and input size: engines and exports are cached under it."""
    digest = hashlib.sha256(f"{encoder.graph_name}:{encoder.input_size}".encode())
    for name, tensor in encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def export_onnx(encoder: ImageEncoderModule, path: str | Path, batch_size: int = 1, opset: int = 18) -> Path:
    """A static-shape (batch_size, 3, S, S) fp32 graph with the encoder's named outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = encoder.input_size
    dummy = torch.zeros(batch_size, 3, size, size)
    module = _TupleOutputs(encoder).eval().float()
    with torch.no_grad():
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=["pixel_values"],
            output_names=list(encoder.output_names),
            opset_version=opset,
            dynamo=False,
        )
    return path
