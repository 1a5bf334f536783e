"""Osprey (CVPR 2024) in plain PyTorch: pixel-level region understanding with a mask-text LLM."""

from .config import OspreyConfig, get_preset
from .modeling_osprey import OspreyForCausalLM
from .predictor import EncodedFrame, OspreyPredictor

__all__ = ["EncodedFrame", "OspreyConfig", "OspreyForCausalLM", "OspreyPredictor", "get_preset"]
