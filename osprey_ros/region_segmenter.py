"""The node's door to SAM: clicks and boxes → masks, or every region of a frame (the ``everything`` mode).

Like ``RegionDescriber`` for Osprey, it calls the segmenter's public API only; the frame's SAM embedding
lives in the same ``FrameFeatures`` as Osprey's features, so segmenting and describing a frame encode it
once each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from osprey_model import FrameFeatures
from osprey_model.frame_features import EncoderRuns
from osprey_model.sam import AutomaticMaskConfig, AutomaticMaskGenerator, SamSegmenter
from osprey_model.sam.segmenter import Prompt


@dataclass
class Segmented:
    """Masks (N, H, W) bool, SAM's predicted IoU (N,), boxes (N, 4) x0, y0, x1, y1 inclusive."""

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.masks)


class RegionSegmenter:
    def __init__(self, segmenter: SamSegmenter, everything: AutomaticMaskConfig) -> None:
        self.segmenter = segmenter
        self.generator = AutomaticMaskGenerator(segmenter, everything)
        self.encoder_runs = EncoderRuns()  # frames SAM's encoder ran on (a cached frame's embedding is reused)

    @property
    def everything_config(self) -> AutomaticMaskConfig:
        return self.generator.config

    @everything_config.setter
    def everything_config(self, config: AutomaticMaskConfig) -> None:
        self.generator.config = config

    def everything(self, frame: FrameFeatures) -> Segmented:
        """Every region SAM finds, best first, at most ``max_masks``; none on a blank image."""
        with self.encoder_runs.counting(frame):
            found = self.generator.generate(frame)
        return Segmented(found.masks, found.scores, found.boxes)

    def mask_prompt(self, mask: np.ndarray) -> torch.Tensor:
        return self.segmenter.mask_prompt(mask)

    def prompted(self, frame: FrameFeatures, prompts: list[Prompt]) -> Segmented:
        """One mask per prompt, in order (the best of SAM's three). Prompts are decoded in batches of one
        kind (with or without a box, with or without a mask), as SAM's prompt encoder takes them. Raises
        ValueError for bad prompts."""
        height, width = frame.image_hw
        masks = np.zeros((len(prompts), height, width), bool)
        scores = np.zeros(len(prompts), np.float32)
        boxes = np.zeros((len(prompts), 4), np.int64)
        kinds: dict[tuple[bool, bool], list[int]] = {}
        for i, prompt in enumerate(prompts):
            kinds.setdefault((prompt.box is not None, prompt.mask_input is not None), []).append(i)
        for group in kinds.values():
            if group:
                with self.encoder_runs.counting(frame):
                    result = self.segmenter.segment(frame, [prompts[i] for i in group], multimask="best")
                masks[group], scores[group], boxes[group] = result.masks[:, 0], result.scores[:, 0], result.boxes[:, 0]
        return Segmented(masks, scores, boxes)
