"""``~/find_region``: a text query → the regions of a described frame that match it, ranked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from osprey_interfaces.srv import FindRegion
from std_msgs.msg import Header

from osprey_model.text_embedding import EmbedFn, minilm_embedder

from .image_conversion import numpy_to_image
from .model_service import ModelService
from .region_finder import rank_by_similarity
from .stamps import stamp_ns

if TYPE_CHECKING:
    from .perception_node import PerceptionNode

MAX_QUERY_CHARS = 300


class FindRegionService(ModelService):
    srv_type = FindRegion
    name = "~/find_region"

    def __init__(self, node: PerceptionNode, embedder: EmbedFn | None = None) -> None:
        super().__init__(node)
        self._embed = embedder  # MiniLM is loaded on the first query: a node never asked pays nothing

    def check(self, request: FindRegion.Request) -> str | None:
        if not request.query.strip():
            return "empty query: say what to look for, e.g. 'the red circle'"
        if len(request.query) > MAX_QUERY_CHARS:
            return f"query of {len(request.query)} characters: at most {MAX_QUERY_CHARS}"
        return None

    def embed(self) -> EmbedFn:
        if self._embed is None:
            self._embed = minilm_embedder()
        return self._embed

    def run(self, request: FindRegion.Request) -> tuple[dict[str, Any], Header]:
        """Model thread: rank by similarity; with ``verify``, the top few also by the model's yes/no."""
        node = self.node
        pipeline = node._configured()
        described = pipeline.described.find(stamp_ns(request.stamp), int(node.settings.slop * 1e9))
        query = request.query.strip()
        ranked = dict(rank_by_similarity(query, described.regions, self.embed()))
        if request.verify and ranked:
            top = sorted(ranked, key=ranked.__getitem__, reverse=True)[: node.settings.find_verify_top]
            key = pipeline.frames.find(described.stamp, 0)
            if key is None:
                raise ValueError("verify needs the frame's image, which has left the cache (cache_size): ask sooner")
            frame = node.frame_features(key, None)
            yes = pipeline.describer.yes_probabilities(frame, [described.masks[i] for i in top], query)
            for i, p_yes in zip(top, yes, strict=True):
                ranked[i] = (ranked[i] + p_yes) / 2
        order = sorted(ranked, key=ranked.__getitem__, reverse=True)
        if request.max_results:
            order = order[: request.max_results]
        header = described.header
        fields = {
            "header": header,
            "ids": [described.regions[i].id for i in order],
            "scores": [ranked[i] for i in order],
            "labels": [described.regions[i].label for i in order],
            "masks": [numpy_to_image(described.masks[i].astype(np.uint8) * 255, "mono8", header=header) for i in order],
        }
        return fields, header
