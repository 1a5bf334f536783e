"""The node's door to SAM: mixed prompt kinds keep their order; which SAM the parameters load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from osprey_model import FrameFeatures
from osprey_model.sam import AutomaticMaskConfig
from osprey_model.sam.segmenter import Prompt
from osprey_ros.parameters import NODE_PARAMETERS, NodeSettings
from osprey_ros.perception_node import load_segmenter
from osprey_ros.region_segmenter import RegionSegmenter
from training.train_tiny_sam import scene

DEFAULTS = NodeSettings(**{spec.name: spec.default for spec in NODE_PARAMETERS})


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_clicks_boxes_and_masks_in_one_call_come_back_in_order(shipped_sam) -> None:
    seed = next(
        s for s in range(40_000, 40_100) if all(m.sum() > 3000 for m in scene(np.random.default_rng(s), 640, 480)[1])
    )
    image, masks = scene(np.random.default_rng(seed), 640, 480)  # the first scene with no sliver of a shape
    assert len(masks) >= 2
    segmenter = RegionSegmenter(shipped_sam, AutomaticMaskConfig())
    frame = FrameFeatures(image)
    prompts = []
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        centre = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
        if i % 3 == 0:
            prompts.append(Prompt(box=np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)))
        elif i % 3 == 1:
            prompts.append(Prompt(points=np.array([[xs[centre], ys[centre]]], np.float32)))
        else:
            prompts.append(
                Prompt(points=np.array([[xs[centre], ys[centre]]], np.float32), mask_input=segmenter.mask_prompt(mask))
            )
    result = segmenter.prompted(frame, prompts)
    assert result.masks.shape == (len(masks), 480, 640) and result.scores.shape == (len(masks),)
    for got, truth in zip(result.masks[:2], masks[:2], strict=False):  # box, then click: trained prompt kinds
        assert iou(got, truth) > 0.7
    assert segmenter.encoder_runs.total == 1  # one frame, one SAM embedding, however many batches


def test_a_missing_embedded_sam_costs_only_the_service_in_topic_mode(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("osprey_model.embedded.EMBEDDED_SAM", tmp_path / "missing.safetensors")
    warnings: list[str] = []
    assert load_segmenter(DEFAULTS, warnings.append) is None
    assert len(warnings) == 1 and "running without SAM" in warnings[0]
    with pytest.raises(FileNotFoundError, match="no embedded SAM"):
        load_segmenter(dataclasses.replace(DEFAULTS, mask_source="everything"), warnings.append)
    with pytest.raises(ValueError, match="sam_preset vit_h needs sam_checkpoint"):
        load_segmenter(dataclasses.replace(DEFAULTS, sam_preset="vit_h"), warnings.append)
    with pytest.raises(FileNotFoundError, match=r"sam_vit_h_4b8939\.pth"):
        load_segmenter(dataclasses.replace(DEFAULTS, sam_preset="vit_h", sam_checkpoint=str(tmp_path / "h.pth")), print)
