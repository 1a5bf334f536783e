"""Osprey's mask-aware visual extractor: one mask token and one pos token per region.

Shapes and names follow the released weights (``mask_extractor.res2..res5``, ``feat_linear``,
``mask_linear.layers.0..2``), not the paper: a 112×112 spatial mask through a 3-layer MLP.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .config import FEATURE_LEVELS, MaskExtractorConfig
from .precision import KeepFloat32


def mask_pool(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Average ``features`` (C, h, w) inside every mask (N, H, W) at once → (N, C).

    Each mask is resized (bilinear) to the feature map and thresholded at > 0 *after* resizing, as the
    released code does; a region that vanishes at this scale pools to zeros (sum / (0 + 1e-8)).
    """
    if masks.shape[-2:] != features.shape[-2:]:
        masks = F.interpolate(masks[:, None], size=features.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    masks = (masks > 0).to(features.dtype)
    area = masks.sum(dim=(-2, -1), keepdim=True) + 1e-8
    return torch.einsum("chw,nhw->nc", features, masks / area)


class MLP(nn.Module):
    """Linear layers with ReLU between them (none after the last), named ``layers.i``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in itertools.pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskExtractor(KeepFloat32):
    """Always fp32, as in the released code: its tokens are cast to the LLM's dtype where they are spliced."""

    def __init__(self, config: MaskExtractorConfig, level_channels: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        self.mask_shape = config.mask_shape
        for name, channels in zip(FEATURE_LEVELS, level_channels, strict=True):
            setattr(self, name, nn.Linear(channels, config.embed_dim))
        self.feat_linear = nn.Linear(config.embed_dim, out_dim)
        self.mask_linear = MLP(config.mask_shape**2, config.embed_dim, out_dim, 3)

    def forward(self, features: dict[str, torch.Tensor], masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of ONE image ({level: (C, h, w)}) and its masks (N, H, W) → mask tokens, pos tokens (N, D)."""
        masks = masks.to(torch.float32)
        pooled = sum(getattr(self, name)(mask_pool(features[name].float(), masks)) for name in FEATURE_LEVELS)
        mask_tokens = self.feat_linear(pooled)
        spatial = F.interpolate(masks[:, None], size=self.mask_shape, mode="bilinear", align_corners=False)
        pos_tokens = self.mask_linear(spatial.flatten(1))
        return mask_tokens, pos_tokens
