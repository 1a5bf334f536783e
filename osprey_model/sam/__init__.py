"""SAM in the model layer: presets on segment-anything's own modules, and a predictor that turns points,
boxes and previous masks into region masks for Osprey."""

from .modeling import SAM_PRESETS, SamConfig, build_sam, get_sam_preset, load_sam
from .segmenter import SamFrame, SamSegmenter, SegmentResult

__all__ = [
    "SAM_PRESETS",
    "SamConfig",
    "SamFrame",
    "SamSegmenter",
    "SegmentResult",
    "build_sam",
    "get_sam_preset",
    "load_sam",
]
