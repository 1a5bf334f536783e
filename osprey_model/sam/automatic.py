"""Describe everything: SAM prompted by a grid of points, the usual filters, and at most N regions.

The filters are ``SamAutomaticMaskGenerator``'s (predicted IoU, stability score, area), but the work is
batched on tensors: every grid point's three candidates are decoded in a few decoder calls and filtered at
the decoder's low resolution, and only the survivors are upscaled to the image. The package's generator
spends most of its time deep-copying per-batch Python lists (measured: 71 % of its time at 256 px), not in
the decoder.

Two departures, both against duplicates: small islands of a mask are removed before it is compared with
others (the package offers this as an optional post-processing step with OpenCV; a stray speck stretches a
box), and duplicates are suppressed by *mask* IoU rather than box IoU, which a speck cannot fool.
Candidates that nest inside each other (a part and its whole) overlap little by mask IoU, so both stay: our
regions may overlap, and Osprey describes each on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from segment_anything.utils.amg import build_point_grid, calculate_stability_score

from ..frame_features import FrameFeatures
from ..image_processing import ImageInput
from .modeling import SamConfig
from .segmenter import SamFrame, SamSegmenter, mask_boxes


@dataclass(frozen=True)
class AutomaticMaskConfig:
    """Defaults are SAM's (predicted IoU 0.88, stability 0.95, NMS 0.7) with a coarser grid for robots'
    frame rates; a small model may need lower thresholds (the node's parameters set them)."""

    points_per_side: int = 16
    points_per_batch: int = 64  # bounds decoder memory: each prompt repeats the image embedding; filters run per batch
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    nms_thresh: float = 0.7  # mask IoU above which the lower-scored of two masks goes
    min_island_fraction: float = 0.1  # a mask's parts smaller than this share of it are removed
    min_area_fraction: float = 0.0005  # of the image; smaller masks are specks
    max_area_fraction: float = 0.95  # larger ones are the whole picture
    max_masks: int = 64

    @classmethod
    def recommended(cls, preset: SamConfig | None, **settings: Any) -> AutomaticMaskConfig:
        """The thresholds that suit the model (``SamConfig.everything_*``; SAM's for an unknown one), with any
        setting overridden."""
        if preset is not None:
            settings.setdefault("pred_iou_thresh", preset.everything_pred_iou_thresh)
            settings.setdefault("stability_score_thresh", preset.everything_stability_thresh)
            settings.setdefault("nms_thresh", preset.everything_nms_thresh)
        return cls(**settings)

    def __post_init__(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1 or self.max_masks < 1:
            raise ValueError("points_per_side, points_per_batch and max_masks must be at least 1")
        for name in ("pred_iou_thresh", "stability_score_thresh", "nms_thresh", "min_island_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.min_area_fraction < self.max_area_fraction <= 1.0:
            raise ValueError("need 0 <= min_area_fraction < max_area_fraction <= 1")


@dataclass
class AutomaticMasks:
    """The regions found, best predicted IoU first."""

    masks: np.ndarray  # (N, H, W) bool at the image's size
    scores: np.ndarray  # (N,) predicted IoU
    stability: np.ndarray  # (N,)
    boxes: np.ndarray  # (N, 4) x0, y0, x1, y1 inclusive, image pixels
    points: np.ndarray  # (N, 2) the grid point (x, y, image pixels) each mask came from

    def __len__(self) -> int:
        return len(self.masks)


@dataclass
class Candidates:
    """Decoded candidate masks at the decoder's low resolution."""

    logits: torch.Tensor  # (M, h, w): the image's part of the padded low-res frame (what the filters see)
    scores: torch.Tensor  # (M,) predicted IoU
    points: torch.Tensor  # (M, 2) image pixels, on the CPU
    padded: torch.Tensor | None = None  # (M, H_low, W_low): the decoder's whole frame, for upscaling


def passes_filters(logits: torch.Tensor, scores: torch.Tensor, config: AutomaticMaskConfig) -> torch.Tensor:
    """(M,) bool: predicted IoU, stability and area; an empty mask's stability is NaN, so it fails."""
    stability = calculate_stability_score(logits, 0.0, config.stability_score_offset)
    area = (logits > 0).flatten(1).sum(1).float() / max(logits.shape[-1] * logits.shape[-2], 1)
    return (
        (scores > config.pred_iou_thresh)
        & (stability >= config.stability_score_thresh)
        & (area >= config.min_area_fraction)
        & (area <= config.max_area_fraction)
    )


def remove_islands(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """``mask`` without its connected parts smaller than ``min_fraction`` of its area (its largest part stays)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    keep = np.flatnonzero(sizes >= min_fraction * sizes.sum()) + 1
    if not len(keep):
        keep = np.array([int(sizes.argmax()) + 1])
    return np.isin(labels, keep)


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices kept by greedy non-maximum suppression on mask IoU, best score first."""
    flat = masks.flatten(1).float()
    inter = flat @ flat.T
    area = flat.sum(1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1)
    kept: list[int] = []
    for i in scores.argsort(descending=True).tolist():
        if all(iou[i, j] <= threshold for j in kept):
            kept.append(i)
    return torch.tensor(kept, dtype=torch.long)


def select_masks(candidates: Candidates, config: AutomaticMaskConfig, image_hw: tuple[int, int]) -> torch.Tensor:
    """Indices (on the CPU) of the candidates kept, best score first: the filters, islands removed, mask NMS,
    the cap. Pure tensor work on low-res logits, so it is testable without a trained SAM."""
    logits, scores = candidates.logits, candidates.scores
    index = torch.nonzero(passes_filters(logits, scores, config)).flatten().cpu()
    if not len(index):
        return index
    binary = (logits[index.to(logits.device)] > 0).cpu().numpy()
    cleaned = torch.from_numpy(np.stack([remove_islands(m, config.min_island_fraction) for m in binary]))
    survivors = mask_nms(cleaned, scores[index.to(scores.device)].float().cpu(), config.nms_thresh)
    return index[survivors][: config.max_masks]


class AutomaticMaskGenerator:
    def __init__(self, segmenter: SamSegmenter, config: AutomaticMaskConfig | None = None) -> None:
        """``config``: default, the thresholds recommended for the segmenter's model."""
        self.segmenter = segmenter
        self.config = config or AutomaticMaskConfig.recommended(segmenter.preset)

    @torch.inference_mode()
    def generate(self, image: SamFrame | FrameFeatures | ImageInput) -> AutomaticMasks:
        """Every region SAM finds in the frame. A blank image gives zero regions, not an error."""
        segmenter = self.segmenter
        frame = segmenter.frame(image)
        candidates = self.candidates(frame)
        kept = select_masks(candidates, self.config, frame.image_hw)
        height, width = frame.image_hw
        if not len(kept):
            return AutomaticMasks(
                masks=np.zeros((0, height, width), bool),
                scores=np.zeros(0, np.float32),
                stability=np.zeros(0, np.float32),
                boxes=np.zeros((0, 4), np.int64),
                points=np.zeros((0, 2), np.float32),
            )
        assert candidates.padded is not None
        device_index = kept.to(candidates.logits.device)
        masks = segmenter.upscale(frame, candidates.padded[device_index][:, None])[:, 0]
        masks = np.stack([remove_islands(m, self.config.min_island_fraction) for m in masks])
        nonempty = masks.reshape(len(masks), -1).any(axis=1)  # a sliver can vanish when upscaled
        masks, kept = masks[nonempty], kept[torch.from_numpy(nonempty)]
        device_index = kept.to(candidates.logits.device)
        stability = calculate_stability_score(candidates.logits[device_index], 0.0, self.config.stability_score_offset)
        return AutomaticMasks(
            masks=masks,
            scores=candidates.scores[device_index].cpu().numpy(),
            stability=stability.cpu().numpy(),
            boxes=mask_boxes(masks),
            points=candidates.points[kept].numpy(),
        )

    def grid_points(self, image_hw: tuple[int, int]) -> np.ndarray:
        """(P, 2) x, y image pixels: SAM's grid, cell centres."""
        height, width = image_hw
        return build_point_grid(self.config.points_per_side) * np.array([width, height], np.float64)

    def candidates(self, frame: SamFrame) -> Candidates:
        """Every grid point's three candidates, decoded ``points_per_batch`` prompts at a time; only those that
        pass the filters are kept, so memory holds one batch and the survivors."""
        segmenter = self.segmenter
        grid = self.grid_points(frame.image_hw)
        valid_h, valid_w = self.low_res_valid_size(frame)
        padded, scores, points = [], [], []
        for start in range(0, len(grid), self.config.points_per_batch):
            batch = grid[start : start + self.config.points_per_batch]
            coords = segmenter.transform.apply_coords(batch.astype(np.float32), frame.image_hw)
            coords_t = torch.as_tensor(coords, dtype=torch.float32, device=segmenter.device)[:, None]
            labels = torch.ones(len(batch), 1, dtype=torch.int64, device=segmenter.device)
            low_res, iou = segmenter.decode(frame, coords_t, labels, multimask=True)
            low_res, iou = low_res.flatten(0, 1), iou.flatten()
            keep = passes_filters(low_res[..., :valid_h, :valid_w], iou, self.config)
            padded.append(low_res[keep])
            scores.append(iou[keep])
            grid_xy = torch.as_tensor(batch, dtype=torch.float32).repeat_interleave(len(iou) // len(batch), dim=0)
            points.append(grid_xy[keep.cpu()])
        full = torch.cat(padded)
        return Candidates(
            logits=full[..., :valid_h, :valid_w], scores=torch.cat(scores), points=torch.cat(points), padded=full
        )

    def low_res_valid_size(self, frame: SamFrame) -> tuple[int, int]:
        """The low-res frame covers the padded square input; this is the image's part of it (a partly covered
        row or column counts)."""
        size = self.segmenter.sam.image_encoder.img_size
        low = self.segmenter.sam.prompt_encoder.mask_input_size[0]
        return math.ceil(frame.input_hw[0] * low / size), math.ceil(frame.input_hw[1] * low / size)
