"""SAM in the model layer: presets on segment-anything's own modules, and a predictor that turns points,
boxes and previous masks into region masks for Osprey."""

from .automatic import AutomaticMaskConfig, AutomaticMaskGenerator, AutomaticMasks
from .modeling import SAM_PRESETS, SamConfig, SamImageEncoder, build_sam, get_sam_preset, load_sam
from .segmenter import SamFrame, SamSegmenter, SegmentResult

__all__ = [
    "SAM_PRESETS",
    "AutomaticMaskConfig",
    "AutomaticMaskGenerator",
    "AutomaticMasks",
    "SamConfig",
    "SamFrame",
    "SamImageEncoder",
    "SamSegmenter",
    "SegmentResult",
    "build_sam",
    "get_sam_preset",
    "load_sam",
]
