"""The node's door to LISA: a query about a frame → the answer and one mask per ``[SEG]``.

Like ``RegionDescriber`` and ``RegionSegmenter``, it calls the predictor's public API only; LISA's CLIP
tokens and SAM embedding live in the frame's ``FrameFeatures`` beside Osprey's, so a frame LISA segmented and
Osprey then described is encoded once by each.
"""

from __future__ import annotations

from osprey_model import FrameFeatures
from osprey_model.frame_features import EncoderRuns
from osprey_model.lisa import LisaPredictor, LisaResult


class RegionReasoner:
    def __init__(self, predictor: LisaPredictor, max_new_tokens: int) -> None:
        self.predictor = predictor
        self.max_new_tokens = max_new_tokens
        self.encoder_runs = EncoderRuns()  # encoder outputs LISA computed (CLIP and SAM count one each)

    def segment(self, frame: FrameFeatures, query: str, max_new_tokens: int = 0) -> LisaResult:
        """At most the node's ``max_new_tokens`` (a request may ask fewer, never more: one long answer would
        hold the model thread and the camera with it). Raises ValueError for an empty or over-long query."""
        tokens = min(max_new_tokens or self.max_new_tokens, self.max_new_tokens)
        with self.encoder_runs.counting(frame):
            return self.predictor.segment(frame, query, max_new_tokens=tokens)
