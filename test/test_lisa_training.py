"""LISA's training pieces against hand-computed values on small tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.lisa.losses import lisa_loss, mask_bce, mask_dice
from training.lisa.metrics import segmentation_scores


def test_bce_and_dice_by_hand() -> None:
    logits = torch.tensor([[[0.0, 2.0], [-2.0, 0.0]]])  # one 2x2 mask
    target = torch.tensor([[[1, 1], [0, 255]]])  # the last pixel ignored
    p = [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))]
    bce = -(math.log(p[0]) + math.log(p[1]) + math.log(1 - p[2])) / 3
    assert mask_bce(logits, target).item() == pytest.approx(bce, rel=1e-6)
    scale, eps = 1000.0, 1e-6
    numerator = 2 * (p[0] + p[1]) / scale
    denominator = (p[0] + p[1] + p[2]) / scale + 2 / scale
    assert mask_dice(logits, target).item() == pytest.approx(1 - (numerator + eps) / (denominator + eps), rel=1e-5)


def test_the_loss_weights_and_averaging_over_all_masks() -> None:
    ce = torch.tensor(2.0)
    a = torch.full((2, 3, 3), 4.0)  # two confident masks of one sample
    b = torch.full((1, 3, 3), -4.0)  # one of another
    ta, tb = torch.ones(2, 3, 3, dtype=torch.long), torch.ones(1, 3, 3, dtype=torch.long)
    loss = lisa_loss(ce, [a, b, torch.zeros(0, 3, 3)], [ta, tb, torch.zeros(0, 3, 3, dtype=torch.long)])
    bce = (2 * mask_bce(a[:1], ta[:1]) + mask_bce(b, tb)) / 3
    dice = (2 * mask_dice(a[:1], ta[:1]) + mask_dice(b, tb)) / 3
    assert loss.bce.item() == pytest.approx(bce.item()) and loss.dice.item() == pytest.approx(dice.item())
    assert loss.total.item() == pytest.approx(2.0 + 2.0 * bce.item() + 0.5 * dice.item())
    text_only = lisa_loss(ce, [torch.zeros(0, 3, 3)], [torch.zeros(0, 3, 3, dtype=torch.long)])
    assert text_only.total.item() == 2.0 and text_only.bce.item() == 0.0


def test_giou_and_ciou_by_hand() -> None:
    truth = np.array([[1, 1, 0, 0], [1, 255, 0, 0]])
    half = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], bool)  # the 255 pixel does not count
    miss = np.zeros((2, 4), bool)
    empty_truth = np.zeros((2, 4), np.uint8)
    scores = segmentation_scores([(half, truth), (miss, truth), (miss, empty_truth)])
    assert scores.giou == pytest.approx((1 / (3 + 1e-5) + 0.0 + 1.0) / 3)  # empty union counts 1
    assert scores.ciou == pytest.approx(1 / 6) and scores.masks == 3
    with pytest.raises(ValueError, match="differ in size"):
        segmentation_scores([(np.zeros((3, 3), bool), truth)])
