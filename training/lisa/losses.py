"""LISA's loss: text cross-entropy ×1.0 + per-pixel BCE ×2.0 + Dice ×0.5, the mask terms averaged over every
mask of the batch at the image's original resolution (the released ``LISA.py``'s definitions).

Pixels labelled ``IGNORE`` (255, ReasonSeg's "ignore" regions) count in neither mask term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = 255
CE_WEIGHT, BCE_WEIGHT, DICE_WEIGHT = 1.0, 2.0, 0.5
DICE_SCALE, DICE_EPS = 1000.0, 1e-6


@dataclass
class LisaLoss:
    total: torch.Tensor
    ce: torch.Tensor
    bce: torch.Tensor
    dice: torch.Tensor


def mask_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over each mask's valid pixels: (N, H, W) logits and targets (0 / 1 / 255)
    → (N,)."""
    valid = (target != IGNORE).float()
    per_pixel = F.binary_cross_entropy_with_logits(logits, (target == 1).float(), reduction="none") * valid
    return per_pixel.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)


def mask_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − Dice of sigmoid(logits) with the target, per mask (N,), as released: both sides divided by 1000
    (so the epsilon matters little on large masks), epsilon 1e-6."""
    valid = (target != IGNORE).float().flatten(1)
    probability = logits.sigmoid().flatten(1) * valid / DICE_SCALE
    truth = (target == 1).float().flatten(1)
    numerator = 2 * (probability * truth).sum(1)
    denominator = probability.sum(1) + (truth / DICE_SCALE).sum(1)
    return 1 - (numerator + DICE_EPS) / (denominator + DICE_EPS)


def lisa_loss(ce: torch.Tensor, mask_logits: list[torch.Tensor], targets: list[torch.Tensor]) -> LisaLoss:
    """``ce``: the language model's (shifted, mean) text loss; per sample, its masks' logits (N_i, H_i, W_i)
    at the image's resolution and their targets. Samples without masks (VQA) add to the text term only."""
    count = sum(len(t) for t in targets)
    zero = ce.new_zeros(())
    if count == 0:
        return LisaLoss(total=CE_WEIGHT * ce, ce=ce, bce=zero, dice=zero)
    bce = sum((mask_bce(m, t).sum() for m, t in zip(mask_logits, targets, strict=True) if len(t)), zero)
    dice = sum((mask_dice(m, t).sum() for m, t in zip(mask_logits, targets, strict=True) if len(t)), zero)
    bce, dice = bce / count, dice / count
    return LisaLoss(total=CE_WEIGHT * ce + BCE_WEIGHT * bce + DICE_WEIGHT * dice, ce=ce, bce=bce, dice=dice)
