"""Osprey (CVPR 2024) in plain PyTorch: pixel-level region understanding with a mask-text LLM."""

from .config import OspreyConfig, get_preset
from .frame_features import FrameFeatures
from .modeling_osprey import OspreyForCausalLM
from .predictor import EncodedFrame, OspreyPredictor

__all__ = ["EncodedFrame", "FrameFeatures", "OspreyConfig", "OspreyForCausalLM", "OspreyPredictor", "get_preset"]
