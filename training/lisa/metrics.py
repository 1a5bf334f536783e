"""Reasoning-segmentation metrics as the released evaluation computes them.

- gIoU: the mean over masks of intersection / union (each with 1e-5 in the denominator); a mask whose
  union is empty (nothing predicted, nothing there) counts 1.0.
- cIoU: the sum of intersections over the sum of unions of all masks.
Pixels labelled 255 in the ground truth are ignored in both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

IGNORE = 255


@dataclass
class SegmentationScores:
    giou: float
    ciou: float
    masks: int


def intersection_union(predicted: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """Of one boolean prediction and a 0 / 1 / 255 ground truth of the same size."""
    if predicted.shape != truth.shape:
        raise ValueError(f"prediction {predicted.shape} and ground truth {truth.shape} differ in size")
    valid = truth != IGNORE
    pred, true = predicted.astype(bool) & valid, (truth == 1) & valid
    return int((pred & true).sum()), int((pred | true).sum())


def segmentation_scores(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> SegmentationScores:
    ious, intersection, union = [], 0, 0
    for predicted, truth in pairs:
        i, u = intersection_union(predicted, truth)
        ious.append(1.0 if u == 0 else i / (u + 1e-5))
        intersection, union = intersection + i, union + u
    return SegmentationScores(
        giou=float(np.mean(ious)) if ious else 0.0, ciou=intersection / union if union else 1.0, masks=len(ious)
    )
