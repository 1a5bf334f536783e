"""Stage 0 of the tiny model: give its vision tower features that know shapes, before the recipe freezes it.

The released Osprey starts from a CLIP-pretrained ConvNeXt-L and keeps it frozen. No pretrained weights
exist offline for the tiny ConvNeXt, and a random frozen tower leaves a region's shape to the pos token (a
resized mask through an MLP, which is not translation-invariant): the tiny model then names colours and
guesses shapes. This stands in for the CLIP pretraining, not for any Osprey stage: the trunk learns to
classify shapes-world regions from features pooled inside each mask at res2..res5, the pooling the mask
extractor itself uses. The probe head is thrown away; stages 1–3 then keep the tower frozen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from osprey_model.config import FEATURE_LEVELS
from osprey_model.image_processing import OspreyImageProcessor, masks_to_tensor
from osprey_model.mask_extractor import mask_pool
from osprey_model.shapes import CATEGORIES, COLOURS
from osprey_model.vision_tower import ClipConvNeXtVisionTower

from .shapes_world import scene

logger = logging.getLogger(__name__)


@dataclass
class VisionPretrainConfig:
    steps: int = 2000
    images: int = 3000  # scenes generated for it (a seed apart from the stage data)
    batch_size: int = 16
    learning_rate: float = 4e-3  # one-cycle peak
    weight_decay: float = 0.05
    overlap: float = 0.5
    seed: int = 0


@dataclass
class RegionExample:
    pixels: torch.Tensor  # (3, S, S), CLIP-normalised
    masks: torch.Tensor  # (N, H, W) visible masks at image size
    categories: torch.Tensor  # (N,)
    colours: torch.Tensor  # (N,)


class RegionProbe(nn.Module):
    """Category and colour of each region from its mask-pooled features (thrown away after pretraining)."""

    def __init__(self, level_channels: tuple[int, ...], width: int = 128) -> None:
        super().__init__()
        self.levels = nn.ModuleList(nn.Linear(channels, width) for channels in level_channels)
        self.category = nn.Linear(width, len(CATEGORIES))
        self.colour = nn.Linear(width, len(COLOURS))

    def forward(self, features: dict[str, torch.Tensor], masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of ONE image ({level: (C, h, w)}), its masks (N, H, W) → logits (N, 6), (N, 6)."""
        pooled = sum(
            layer(mask_pool(features[name], masks)) for layer, name in zip(self.levels, FEATURE_LEVELS, strict=True)
        )
        hidden = F.gelu(pooled)
        return self.category(hidden), self.colour(hidden)


def region_examples(count: int, image_size: int, seed: int, overlap: float) -> list[RegionExample]:
    rng = np.random.default_rng(seed)
    processor = OspreyImageProcessor(image_size)
    colours = list(COLOURS)
    examples = []
    for _ in tqdm(range(count), desc="stage 0 data", leave=False):
        image, visible, _, shapes = scene(rng, overlap)
        examples.append(
            RegionExample(
                pixels=processor(image)[0],
                masks=masks_to_tensor(visible, image.shape[:2]),
                categories=torch.tensor([CATEGORIES.index(s.category) for s in shapes]),
                colours=torch.tensor([colours.index(s.colour) for s in shapes]),
            )
        )
    return examples


def region_loss(
    tower: ClipConvNeXtVisionTower, probe: RegionProbe, batch: list[RegionExample], flip: torch.Tensor
) -> torch.Tensor:
    """Mean over images of category + colour cross-entropy; ``flip`` mirrors images (and masks) left-right."""
    pixels = torch.stack([e.pixels for e in batch])
    pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
    features = tower(pixels)
    total = pixels.new_zeros(())
    for i, example in enumerate(batch):
        masks = example.masks.flip(-1) if flip[i] else example.masks
        category, colour = probe({name: features[name][i] for name in FEATURE_LEVELS}, masks.float())
        total = total + F.cross_entropy(category, example.categories) + F.cross_entropy(colour, example.colours)
    return total / len(batch)


def pretrain_vision_tower(tower: ClipConvNeXtVisionTower, image_size: int, config: VisionPretrainConfig) -> dict:
    """Train ``tower`` in place; returns steps, seconds and the mean loss of the last 50 steps."""
    start = time.monotonic()
    generator = torch.Generator().manual_seed(config.seed)
    examples = region_examples(config.images, image_size, config.seed + 50_000, config.overlap)
    probe = RegionProbe(tower.channels)
    tower.train().requires_grad_(True)
    params = [*tower.parameters(), *probe.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, config.learning_rate, total_steps=max(config.steps, 2), pct_start=0.05
    )
    losses = []
    for _ in tqdm(range(config.steps), desc="stage 0 vision", leave=False):
        picks = torch.randperm(len(examples), generator=generator)[: config.batch_size]
        flip = torch.rand(len(picks), generator=generator) < 0.5
        loss = region_loss(tower, probe, [examples[i] for i in picks], flip)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    tower.eval().requires_grad_(False)
    tail = losses[-50:]
    result = {
        "steps": config.steps,
        "seconds": time.monotonic() - start,
        "final_loss": sum(tail) / len(tail) if tail else float("nan"),
        "first_loss": losses[0] if losses else float("nan"),
    }
    logger.info("stage 0: %d steps in %.0f s, loss %.3f", config.steps, result["seconds"], result["final_loss"])
    return result
