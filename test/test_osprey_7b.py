"""The released 7b shapes: real vision tower, projector and extractor; the LLM on the meta device only.

7B parameters do not fit in this machine's memory, so the LLM is checked for shapes and key names.
"""

from __future__ import annotations

import pytest
import torch

from osprey_model import OspreyForCausalLM, get_preset
from osprey_model.modeling_osprey import own_name


@pytest.fixture(scope="module")
def model_7b() -> OspreyForCausalLM:
    return OspreyForCausalLM(get_preset("osprey-7b"), llm_device="meta").eval()


def test_vision_projector_extractor_shapes(model_7b: OspreyForCausalLM) -> None:
    pixels = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        features = model_7b.encode_images(pixels)
        masks = torch.zeros(2, 480, 640)
        masks[0, 100:300, 50:200] = 1
        masks[1, 10:20, 600:630] = 1
        mask_tokens, pos_tokens = model_7b.encode_regions(features, 0, masks)
    shapes = {name: tuple(feats.shape) for name, feats in features.levels.items()}
    assert shapes == {
        "res2": (1, 192, 128, 128),
        "res3": (1, 384, 64, 64),
        "res4": (1, 768, 32, 32),
        "res5": (1, 1536, 16, 16),
    }
    assert features.image_tokens.shape == (1, 1024, 4096)
    assert mask_tokens.shape == pos_tokens.shape == (2, 4096)
    assert torch.isfinite(mask_tokens).all() and torch.isfinite(pos_tokens).all()


def test_open_clip_vision_keys(model_7b: OspreyForCausalLM) -> None:
    keys = model_7b.vision_tower.visual.state_dict().keys()
    assert len(keys) == 345
    assert {"trunk.stem.0.weight", "trunk.stages.1.downsample.1.weight", "trunk.stages.2.blocks.26.gamma"} <= keys
    assert {"trunk.head.norm.weight", "head.mlp.fc1.weight", "head.mlp.fc2.weight"} <= keys
    assert not any(k.startswith("trunk.stages.0.downsample") for k in keys)  # stage 0 has no downsample


def test_released_names_and_shapes(model_7b: OspreyForCausalLM) -> None:
    state = model_7b.released_state_dict()
    expected = {
        "model.embed_tokens.weight": (32000, 4096),
        "model.layers.31.self_attn.q_proj.weight": (4096, 4096),
        "model.layers.0.mlp.gate_proj.weight": (11008, 4096),
        "model.layers.0.input_layernorm.weight": (4096,),
        "model.norm.weight": (4096,),
        "lm_head.weight": (32000, 4096),
        "model.mm_projector.0.weight": (4096, 768),
        "model.mm_projector.2.weight": (4096, 4096),
        "mask_extractor.res2.weight": (1024, 192),
        "mask_extractor.res5.weight": (1024, 1536),
        "mask_extractor.feat_linear.weight": (4096, 1024),
        "mask_extractor.mask_linear.layers.0.weight": (1024, 112 * 112),
        "mask_extractor.mask_linear.layers.1.weight": (1024, 1024),
        "mask_extractor.mask_linear.layers.2.weight": (4096, 1024),
    }
    assert {key: tuple(state[key].shape) for key in expected} == expected
    assert state["lm_head.weight"].is_meta and not state["mask_extractor.res2.weight"].is_meta
    layer_keys = [k for k in state if k.startswith("model.layers.")]
    assert len(layer_keys) == 32 * 9
    assert len(state) == 32 * 9 + 3 + 4 + 2 * 4 + 2 + 6
    assert all(own_name(key) is not None for key in state)
    llm_params = sum(t.numel() for k, t in state.items() if not k.startswith(("mask_extractor", "model.mm_projector")))
    assert 6.7e9 < llm_params < 6.8e9
