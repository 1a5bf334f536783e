"""``~/describe``: a question about regions of a cached camera frame or of an image sent with the request."""

from __future__ import annotations

from typing import Any

from osprey_interfaces.srv import DescribeRegions
from std_msgs.msg import Header

from .model_service import ModelService


class DescribeService(ModelService):
    srv_type = DescribeRegions
    name = "~/describe"

    def check(self, request: DescribeRegions.Request) -> str | None:
        if not request.masks:
            return "empty request: send at least one mask, and an image or the stamp of a recent frame"
        return None

    def run(self, request: DescribeRegions.Request) -> tuple[dict[str, Any], Header]:
        """Model thread: one answer per mask, and a note when masks were capped."""
        node = self.node
        pipeline = node._configured()
        frame, header = self.frame(request.image, request.stamp)
        capped_before = pipeline.stats.regions_capped
        masks, _ = node.read_masks(list(request.masks), [], f"service request ({len(request.masks)} masks)")
        note = (
            f"capped: {len(request.masks)} masks received, answered the first {len(masks)} (max_regions)"
            if pipeline.stats.regions_capped > capped_before
            else ""
        )
        answers = pipeline.describer.answer(frame, masks, request.question, request.max_new_tokens)
        return {"answers": answers, "message": note}, header
