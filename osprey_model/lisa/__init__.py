"""LISA (CVPR 2024) in plain PyTorch: a multimodal LLM whose ``[SEG]`` token prompts SAM's mask decoder, so a
query that needs reasoning ("where can I throw away this cup?") comes back as text and masks."""

from .config import LisaConfig, get_lisa_preset
from .modeling_lisa import LisaForCausalLM
from .predictor import LisaFrame, LisaPredictor, LisaResult

__all__ = ["LisaConfig", "LisaForCausalLM", "LisaFrame", "LisaPredictor", "LisaResult", "get_lisa_preset"]
