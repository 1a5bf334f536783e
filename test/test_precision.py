"""bf16 / fp16 serving keeps what the released code keeps in fp32: rotary frequencies and the mask extractor."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from osprey_model import OspreyForCausalLM, get_preset
from osprey_model.tiny import create_tiny_checkpoint

CONTEXT = 1250  # every Osprey prompt is ~1100+ tokens; the rotary error grows with the position


@pytest.fixture(scope="module")
def long_context_model() -> OspreyForCausalLM:
    """A tiny model whose attention is sharp enough for positions to matter (random q/k scaled up)."""
    config = get_preset("tiny")
    config.max_position_embeddings = config.max_length = 2048
    torch.manual_seed(0)
    model = OspreyForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.language_model.named_parameters():
            if "q_proj" in name or "k_proj" in name:
                param.mul_(20)
    return model


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rotary_angles_at_the_last_position_equal_fp32(long_context_model, dtype) -> None:
    rotary32 = long_context_model.language_model.model.rotary_emb
    rotary = copy.deepcopy(long_context_model).to(dtype).language_model.model.rotary_emb
    assert rotary.inv_freq.dtype == torch.float32
    assert torch.equal(rotary.inv_freq, rotary32.inv_freq)
    position = torch.tensor([[CONTEXT - 1]])
    cos32, sin32 = rotary32(torch.zeros(1, dtype=torch.float32), position)
    cos, sin = rotary(torch.zeros(1, dtype=dtype), position)
    # The released code rounds only the final cos/sin to the model dtype; so do we.
    assert torch.equal(cos, cos32.to(dtype)) and torch.equal(sin, sin32.to(dtype))


def test_bf16_logits_stay_near_fp32_at_long_context(long_context_model) -> None:
    bf16 = copy.deepcopy(long_context_model).to(torch.bfloat16)
    ids = torch.randint(3, 30000, (1, CONTEXT), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits32 = long_context_model.language_model(input_ids=ids).logits[0, -50:]
        logits16 = bf16.language_model(input_ids=ids).logits[0, -50:].float()
    # Measured: 0.11 with fp32 frequencies, 0.61 when inv_freq is rounded to bf16 (logits span about ±0.9).
    assert (logits32 - logits16).abs().max() < 0.25


def test_mask_extractor_runs_in_fp32_under_a_bf16_model(tmp_path: Path) -> None:
    directory = create_tiny_checkpoint(tmp_path, seed=0)
    model32 = OspreyForCausalLM.from_pretrained(directory)
    model16 = OspreyForCausalLM.from_pretrained(directory, dtype=torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in model16.mask_extractor.parameters())
    assert model16.projector[0].weight.dtype == torch.bfloat16
    channels = model32.vision_tower.channels
    levels = {name: torch.randn(1, c, 8, 8) for name, c in zip(("res2", "res3", "res4", "res5"), channels, strict=True)}
    masks = torch.zeros(2, 40, 40)
    masks[0, 5:20, 5:30], masks[1, 20:, 10:] = 1, 1
    with torch.no_grad():
        feats32 = model32.encode_images(None, vision_levels=levels)
        feats16 = model16.encode_images(None, vision_levels=levels)
        mask32, pos32 = model32.encode_regions(feats32, 0, masks)
        mask16, pos16 = model16.encode_regions(feats16, 0, masks)
    assert mask16.dtype == pos16.dtype == torch.float32
    assert torch.equal(pos16, pos32)  # the spatial token sees only the mask: bit-identical
    # The pooled features come from bf16 levels; the arithmetic after them is fp32.
    assert torch.allclose(mask16, mask32, atol=2e-2, rtol=2e-2)
