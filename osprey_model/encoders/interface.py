"""What the encoder backends serve, whatever the model behind it."""

from __future__ import annotations

import torch
from torch import nn


class ImageEncoderModule(nn.Module):
    """A module from normalised pixels (B, 3, S, S) to named feature maps.

    Osprey's ConvNeXt tower (``res2``..``res5``) and SAM's ViT (``image_embeddings``) both are one; the
    backends (torch, compile, ONNX Runtime, TensorRT) know nothing else about the model behind it.
    """

    graph_name: str  # exports and engines are cached under it
    output_names: tuple[str, ...]

    @property
    def input_size(self) -> int:
        raise NotImplementedError

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError
