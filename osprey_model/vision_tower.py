"""Frozen open_clip ConvNeXt trunk returning the four stage outputs res2..res5."""

from __future__ import annotations

import logging
from pathlib import Path

import open_clip
import torch
from open_clip.timm_model import TimmModel

from .checkpoint_io import describe_keys, load_safetensors, load_torch_bin
from .config import FEATURE_LEVELS, VisionConfig
from .encoders.interface import ImageEncoderModule

logger = logging.getLogger(__name__)

CLIP_VISUAL_PREFIX = "visual."


class ClipConvNeXtVisionTower(ImageEncoderModule):
    """open_clip's timm adapter under ``visual`` so an open_clip file's ``visual.*`` keys load directly."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        if config.open_clip_model:
            vision_cfg = open_clip.get_model_config(config.open_clip_model)["vision_cfg"]
            self.visual = TimmModel(
                vision_cfg["timm_model_name"],
                embed_dim=config.clip_embed_dim,
                image_size=config.image_size,
                pool=vision_cfg.get("timm_pool", ""),
                proj=vision_cfg.get("timm_proj", "mlp"),
                proj_bias=vision_cfg.get("timm_proj_bias", False),
            )
        else:
            self.visual = TimmModel(
                config.timm_model_name,
                embed_dim=config.clip_embed_dim,
                image_size=config.image_size,
                pool="",
                proj="mlp",
            )
        self.channels = tuple(info["num_chs"] for info in self.visual.trunk.feature_info)
        self.requires_grad_(False)

    graph_name = "convnext"  # what encoder backends name their exports and engines after
    output_names = FEATURE_LEVELS

    @property
    def input_size(self) -> int:
        return self.config.image_size

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(info["reduction"] for info in self.visual.trunk.feature_info)

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """pixel_values (B, 3, S, S) normalised → {res2..res5: (B, C_i, S/stride_i, S/stride_i)}."""
        trunk = self.visual.trunk
        x = trunk.stem(pixel_values)
        features = {}
        for name, stage in zip(FEATURE_LEVELS, trunk.stages, strict=True):
            x = stage(x)
            features[name] = x
        return features

    def load_open_clip_file(self, path: str | Path) -> list[str]:
        """Load the vision part of an ``open_clip_pytorch_model.bin`` (or .safetensors), non-strict.

        The file holds the whole CLIP model; the text tower and anything else outside ``visual.`` is
        ignored. One log line reports what was ignored and what was missing; the missing keys (relative
        to ``visual.``) are returned.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"CLIP vision weights not found: {path}. Put open_clip_pytorch_model.bin of "
                "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup there, or pass --clip / clip_path."
            )
        state = load_torch_bin(path) if path.suffix != ".safetensors" else load_safetensors(path)
        visual = {k[len(CLIP_VISUAL_PREFIX) :]: v for k, v in state.items() if k.startswith(CLIP_VISUAL_PREFIX)}
        if not visual:
            raise ValueError(f"{path} holds no '{CLIP_VISUAL_PREFIX}*' keys: not an open_clip checkpoint")
        result = self.visual.load_state_dict(visual, strict=False)
        ignored = len(state) - len(visual) + len(result.unexpected_keys)
        missing = list(result.missing_keys)
        logger.info(
            "loaded CLIP vision tower from %s: %d keys loaded, %d ignored (non-visual or unexpected: %s), %d missing%s",
            path,
            len(visual) - len(result.unexpected_keys),
            ignored,
            describe_keys(result.unexpected_keys, limit=3) or "text tower",
            len(missing),
            f" ({describe_keys(missing, limit=3)})" if missing else "",
        )
        return missing
