"""Describe everything: SAM prompted by a grid of points, the usual filters, and at most N regions.

The filters are ``SamAutomaticMaskGenerator``'s (predicted IoU, stability score, area, box NMS), but the
work is batched on tensors: every grid point's three candidates are decoded in a few decoder calls and
filtered at the decoder's low resolution, and only the survivors are upscaled to the image. The package's
generator spends most of its time deep-copying per-batch Python lists (measured: 71 % of its time at
256 px), not in the decoder.

Candidates that nest inside each other (a part and its whole) have different boxes, so box NMS keeps both:
our regions may overlap, and Osprey describes each on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.utils.amg import batched_mask_to_box, build_point_grid, calculate_stability_score
from torchvision.ops import nms

from ..frame_features import FrameFeatures
from ..image_processing import ImageInput
from .segmenter import SamFrame, SamSegmenter, mask_boxes


@dataclass(frozen=True)
class AutomaticMaskConfig:
    """Defaults are SAM's (IoU 0.88, stability 0.95, NMS 0.7) with a coarser grid for robots' frame rates."""

    points_per_side: int = 16
    points_per_batch: int = 64  # bounds decoder memory: each prompt repeats the image embedding; filters run per batch
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_area_fraction: float = 0.0005  # of the image; smaller masks are specks
    max_area_fraction: float = 0.95  # larger ones are the whole picture
    max_masks: int = 64

    def __post_init__(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1 or self.max_masks < 1:
            raise ValueError("points_per_side, points_per_batch and max_masks must be at least 1")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
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


def select_masks(candidates: Candidates, config: AutomaticMaskConfig, image_hw: tuple[int, int]) -> torch.Tensor:
    """Indices (on the CPU) of the candidates kept, best score first: the filters, box NMS, the cap.

    Pure tensor work on low-res logits, so it is testable without a trained SAM.
    """
    logits, scores = candidates.logits, candidates.scores
    index = torch.nonzero(passes_filters(logits, scores, config)).flatten()
    if not len(index):
        return index.cpu()
    height, width = image_hw
    scale = torch.tensor(
        [width / logits.shape[-1], height / logits.shape[-2]] * 2, dtype=torch.float32, device=logits.device
    )
    corners = batched_mask_to_box(logits[index] > 0).float() + torch.tensor([0, 0, 1, 1], device=logits.device)
    survivors = nms(corners * scale, scores[index].float(), config.box_nms_thresh)
    return index[survivors][: config.max_masks].cpu()


class AutomaticMaskGenerator:
    def __init__(self, segmenter: SamSegmenter, config: AutomaticMaskConfig | None = None) -> None:
        self.segmenter = segmenter
        self.config = config or AutomaticMaskConfig()

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
