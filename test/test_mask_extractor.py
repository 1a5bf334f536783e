"""The mask-aware extractor against a direct numpy computation and against the per-region loop."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from osprey_model.config import FEATURE_LEVELS, MaskExtractorConfig
from osprey_model.mask_extractor import MaskExtractor, mask_pool


def test_mask_pool_matches_numpy_same_size() -> None:
    features = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    mask = np.zeros((4, 4), np.float32)
    mask[1:3, 0:2] = 1
    expected = features[:, mask > 0].mean(axis=1)
    pooled = mask_pool(torch.from_numpy(features), torch.from_numpy(mask)[None])
    np.testing.assert_allclose(pooled[0].numpy(), expected, rtol=1e-6)


def test_mask_pool_resizes_then_thresholds() -> None:
    """Halving with bilinear (align_corners=False) averages 2×2 blocks; any set pixel keeps the block."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 4, 4)).astype(np.float32)
    mask = np.zeros((8, 8), np.float32)
    mask[0, 0] = 1  # one pixel: its whole block counts after thresholding at > 0
    mask[4:8, 2:6] = 1
    blocks = mask.reshape(4, 2, 4, 2).mean(axis=(1, 3)) > 0
    expected = features[:, blocks].sum(axis=1) / (blocks.sum() + 1e-8)
    pooled = mask_pool(torch.from_numpy(features), torch.from_numpy(mask)[None])
    np.testing.assert_allclose(pooled[0].numpy(), expected, rtol=1e-5)


def test_mask_pool_vanishing_region_pools_to_zero() -> None:
    features = torch.randn(5, 2, 2)
    mask = torch.zeros(1, 2, 2)
    assert torch.count_nonzero(mask_pool(features, mask)) == 0


def _looped(extractor: MaskExtractor, features: dict[str, torch.Tensor], masks: torch.Tensor):
    """The released formulation: one region at a time."""
    mask_tokens, pos_tokens = [], []
    for mask in masks:
        pooled = sum(getattr(extractor, name)(mask_pool(features[name], mask[None])) for name in FEATURE_LEVELS)
        mask_tokens.append(extractor.feat_linear(pooled))
        spatial = F.interpolate(mask[None, None], size=extractor.mask_shape, mode="bilinear", align_corners=False)
        pos_tokens.append(extractor.mask_linear(spatial.reshape(1, -1)))
    return torch.cat(mask_tokens), torch.cat(pos_tokens)


def test_vectorised_equals_looped() -> None:
    channels = (8, 16, 32, 64)
    extractor = MaskExtractor(MaskExtractorConfig(embed_dim=24, mask_shape=14), channels, out_dim=40)
    features = {
        name: torch.randn(c, 64 // 2**i, 64 // 2**i)
        for i, (name, c) in enumerate(zip(FEATURE_LEVELS, channels, strict=True))
    }
    masks = (torch.rand(7, 100, 130) > 0.6).float()
    masks[3] = 0
    masks[3, 10:14, 20:90] = 1  # a thin strip that vanishes at the coarsest level
    vec_mask, vec_pos = extractor(features, masks)
    loop_mask, loop_pos = _looped(extractor, features, masks)
    assert vec_mask.shape == (7, 40) and vec_pos.shape == (7, 40)
    torch.testing.assert_close(vec_mask, loop_mask, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(vec_pos, loop_pos, rtol=1e-5, atol=1e-6)


def test_pos_token_uses_unthresholded_mask() -> None:
    """The pos MLP sees bilinear values in [0, 1], not a re-binarised mask (a detail that changes numbers)."""
    extractor = MaskExtractor(MaskExtractorConfig(embed_dim=8, mask_shape=4), (2, 2, 2, 2), out_dim=8)
    features = {name: torch.randn(2, 4, 4) for name in FEATURE_LEVELS}
    mask = torch.zeros(1, 9, 9)
    mask[0, 3:6, 3:6] = 1
    seen = []
    extractor.mask_linear.layers[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    extractor(features, mask)
    values = seen[0].unique()
    assert ((values > 0) & (values < 1)).any()
