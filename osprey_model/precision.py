"""Pieces that stay in float32 whatever dtype the model is served in, as in the released code.

``model.to(torch.bfloat16)`` casts every floating tensor. Two must not follow:

- the rotary ``inv_freq`` buffer: rounded to bf16 it is off by up to 1.2e-3 rad per position, about 1.4 rad
  at position 1178, and every Osprey prompt is ~1100+ tokens long. The released code computes the angles
  from fp32 frequencies and rounds only the resulting cos/sin to the model dtype (transformers still does
  that last rounding, so we keep it).
- the mask-aware extractor, which the released code always runs in fp32.

``KeepFloat32`` makes a module follow the model's *device* but never its dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding


class KeepFloat32(nn.Module):
    """Mixin: ``.to(dtype)`` / ``.half()`` / ``.bfloat16()`` move this module's tensors but keep fp32."""

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True):  # type: ignore[override]
        def device_only(tensor: torch.Tensor) -> torch.Tensor:
            moved = fn(tensor)
            if tensor.is_floating_point() and moved.dtype != tensor.dtype:
                return tensor.to(device=moved.device, dtype=torch.float32)
            return moved

        return super()._apply(device_only, recurse)


class Float32RotaryEmbedding(KeepFloat32, LlamaRotaryEmbedding):
    """LLaMA's rotary embedding whose frequencies stay fp32 under any later ``.to()``."""


def keep_rotary_in_float32(language_model: LlamaForCausalLM, config: LlamaConfig) -> None:
    """Replace the decoder's rotary embedding by one computed afresh in fp32 (also after a meta-device build)."""
    device = language_model.model.embed_tokens.weight.device
    rotary = Float32RotaryEmbedding(config, device=None if device.type == "meta" else device)
    language_model.model.rotary_emb = rotary
