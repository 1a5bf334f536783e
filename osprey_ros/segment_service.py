"""``~/segment_and_describe``: clicks and boxes (or "everything") → SAM's masks → Osprey's answer for each.

The masks come back as mono8 images with SAM's scores and boxes, so a caller can also use them without the
text; the frame's SAM embedding and Osprey features are cached with the camera frame, so asking about the
same frame again encodes nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from osprey_interfaces.msg import RegionPrompt
from osprey_interfaces.srv import SegmentAndDescribe
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header

from osprey_model.sam.segmenter import Prompt

from .image_conversion import ImageConversionError, mask_to_bool, numpy_to_image
from .model_service import ModelService
from .region_segmenter import RegionSegmenter


def to_prompt(msg: RegionPrompt, index: int) -> tuple[Prompt, np.ndarray | None]:
    """A ROS prompt as SAM's, and its prompt mask decoded (converted to SAM's input once the frame's size is
    known). Structural errors here; positions are checked against the image by the segmenter."""
    where = f"prompt {index}"
    box_given = msg.box.width > 0 or msg.box.height > 0
    mask_given = msg.mask.width > 0 or msg.mask.height > 0
    if not msg.points and not box_given and not mask_given:
        raise ValueError(f"{where} is empty: give clicks (points), a box or a mask")
    labels = list(msg.labels)
    if labels and len(labels) != len(msg.points):
        raise ValueError(f"{where}: {len(labels)} labels for {len(msg.points)} points (one per point, or none)")
    box = None
    if box_given:
        if msg.box.width == 0 or msg.box.height == 0:
            raise ValueError(f"{where}: the box is {msg.box.width}x{msg.box.height} pixels: empty")
        x, y = msg.box.x_offset, msg.box.y_offset
        box = np.array([x, y, x + msg.box.width, y + msg.box.height], np.float32)
    mask = None
    if mask_given:
        try:
            mask = mask_to_bool(msg.mask, index)
        except ImageConversionError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not mask.any():
            raise ValueError(f"{where}: the prompt mask is empty (no pixel set)")
    points = np.array([[p.x, p.y] for p in msg.points], np.float32) if msg.points else None
    prompt = Prompt(
        points=points,
        labels=np.array(labels or [1] * len(msg.points), np.int64) if msg.points else None,
        box=box,
    )
    return prompt, mask


def box_msg(box: np.ndarray) -> RegionOfInterest:
    """x0, y0, x1, y1 inclusive → ROI (all zero for an empty mask)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if x0 < 0:
        return RegionOfInterest()
    return RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0 + 1, height=y1 - y0 + 1)


class SegmentService(ModelService):
    srv_type = SegmentAndDescribe
    name = "~/segment_and_describe"

    def segmenter(self) -> RegionSegmenter | None:
        pipeline = self.node.pipeline
        return pipeline.segmenter if pipeline is not None else None

    def check(self, request: SegmentAndDescribe.Request) -> str | None:
        if self.segmenter() is None:
            return "SAM is not loaded (sam_preset is none): set sam_preset and reconfigure the node"
        if request.everything and request.prompts:
            return "both prompts and everything: send prompts, or set everything with no prompts"
        if not request.everything and not request.prompts:
            return "no prompt: send clicks or boxes in prompts, or set everything"
        try:
            for i, prompt in enumerate(request.prompts[: self.node.settings.max_regions]):
                to_prompt(prompt, i)
        except ValueError as exc:
            return str(exc)
        return None

    def run(self, request: SegmentAndDescribe.Request) -> tuple[dict[str, Any], Header]:
        """Model thread: segment, then describe the non-empty masks."""
        node = self.node
        pipeline = node._configured()
        segmenter = self.segmenter()
        assert segmenter is not None  # checked on the executor thread; configure made it
        frame, header = self.frame(request.image, request.stamp)
        notes = []
        if request.everything:
            segmented = segmenter.everything(frame)
        else:
            limit = node.settings.max_regions
            if len(request.prompts) > limit:
                pipeline.stats.regions_capped += len(request.prompts) - limit
                notes.append(
                    f"capped: {len(request.prompts)} prompts received, segmented the first {limit} (max_regions)"
                )
            prompts = []
            for i, msg in enumerate(request.prompts[:limit]):
                prompt, mask = to_prompt(msg, i)
                if mask is not None:
                    if mask.shape != frame.image_hw:
                        raise ValueError(f"prompt {i}: the mask is {mask.shape} (H, W), the image {frame.image_hw}")
                    prompt.mask_input = segmenter.mask_prompt(mask)
                prompts.append(prompt)
            segmented = segmenter.prompted(frame, prompts)
        nonempty = [i for i, mask in enumerate(segmented.masks) if mask.any()]
        if len(segmented) == 0:
            notes.append("no region found")
        elif len(nonempty) < len(segmented):
            empty = sorted(set(range(len(segmented))) - set(nonempty))
            notes.append(f"SAM found nothing for prompt(s) {', '.join(map(str, empty))}: empty mask, empty answer")
        answers = [""] * len(segmented)
        if nonempty:
            described = pipeline.describer.answer(
                frame, [segmented.masks[i] for i in nonempty], request.question, request.max_new_tokens
            )
            for i, answer in zip(nonempty, described, strict=True):
                answers[i] = answer
        fields = {
            "masks": [numpy_to_image(mask.astype(np.uint8) * 255, "mono8", header=header) for mask in segmented.masks],
            "scores": [float(s) for s in segmented.scores],
            "boxes": [box_msg(box) for box in segmented.boxes],
            "answers": answers,
            "message": "; ".join(notes),
        }
        return fields, header
