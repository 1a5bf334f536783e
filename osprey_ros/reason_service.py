"""``~/reason_segment``: a query in words → LISA's answer and masks (and, if asked, Osprey's description of
each mask). The masks are also published as ``RegionMasks`` on ``~/reason_masks`` for other nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from osprey_interfaces.msg import RegionMasks
from osprey_interfaces.srv import ReasonSegment
from std_msgs.msg import Header

from osprey_model.lisa.prompting import check_query
from osprey_model.sam.segmenter import mask_boxes

from .image_conversion import numpy_to_image
from .model_service import ModelService
from .segment_service import box_msg

if TYPE_CHECKING:
    from .perception_node import PerceptionNode

MAX_QUERY_CHARS = 4000  # a cheap bound on the executor thread; the token limit is checked on the model thread


class ReasonService(ModelService):
    srv_type = ReasonSegment
    name = "~/reason_segment"

    def __init__(self, node: PerceptionNode, publish_masks: Any) -> None:
        super().__init__(node)
        self.publish_masks = publish_masks

    def check(self, request: ReasonSegment.Request) -> str | None:
        pipeline = self.node.pipeline
        if pipeline is None or pipeline.reasoner is None:
            return "LISA is not loaded: set lisa_model_dir (and lisa_clip_dir) and reconfigure the node"
        if len(request.query) > MAX_QUERY_CHARS:
            return f"the query is {len(request.query)} characters long; at most {MAX_QUERY_CHARS} are read"
        try:
            check_query(request.query)
        except ValueError as exc:
            return str(exc)
        return None

    def run(self, request: ReasonSegment.Request) -> tuple[dict[str, Any], Header]:
        """Model thread: LISA's answer and masks, then Osprey's descriptions of the non-empty ones if asked."""
        pipeline = self.node._configured()
        reasoner = pipeline.reasoner
        assert reasoner is not None  # checked on the executor thread; configure made it
        frame, header = self.frame(request.image, request.stamp)
        result = reasoner.segment(frame, request.query, request.max_new_tokens)
        masks = [numpy_to_image(mask.astype(np.uint8) * 255, "mono8", header=header) for mask in result.masks]
        self.publish_masks(RegionMasks(header=header, masks=masks, ids=list(range(len(masks)))))
        notes = [] if len(result.masks) else ["no [SEG] in the answer: no mask"]
        nonempty = [i for i, mask in enumerate(result.masks) if mask.any()]
        empty = [str(i) for i in range(len(result.masks)) if i not in nonempty]
        if empty:
            notes.append(f"SAM found nothing for [SEG] {', '.join(empty)}: empty mask")
        descriptions = [""] * len(result.masks) if request.describe else []
        if request.describe and nonempty:
            try:
                answers = pipeline.describer.answer(frame, [result.masks[i] for i in nonempty], "", 0)
            except ValueError as exc:  # e.g. more masks than Osprey's context holds: LISA's answer still counts
                notes.append(f"not described: {exc}")
            else:
                for i, answer in zip(nonempty, answers, strict=True):
                    descriptions[i] = answer
        fields = {
            "answer": result.answer,
            "masks": masks,
            "scores": [float(s) for s in result.scores],
            "boxes": [box_msg(box) for box in mask_boxes(result.masks)] if len(result.masks) else [],
            "descriptions": descriptions,
            "message": "; ".join(notes),
        }
        return fields, header
