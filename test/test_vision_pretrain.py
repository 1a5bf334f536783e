"""Stage 0 of the tiny model: the vision tower learns regions' shapes and colours, then is handed back frozen."""

from __future__ import annotations

import torch

from osprey_model import get_preset
from osprey_model.shapes import CATEGORIES
from osprey_model.vision_tower import ClipConvNeXtVisionTower
from training.vision_pretrain import (
    RegionProbe,
    VisionPretrainConfig,
    pretrain_vision_tower,
    region_examples,
    region_loss,
)


def tiny_tower() -> ClipConvNeXtVisionTower:
    torch.manual_seed(0)
    return ClipConvNeXtVisionTower(get_preset("tiny").vision)


def test_examples_pair_every_visible_mask_with_its_labels() -> None:
    examples = region_examples(3, 128, seed=5, overlap=0.5)
    for example in examples:
        assert example.pixels.shape == (3, 128, 128)
        assert len(example.masks) == len(example.categories) == len(example.colours) >= 3
        assert example.masks.flatten(1).any(dim=1).all()  # no empty region
        assert int(example.categories.max()) < len(CATEGORIES)
    assert torch.equal(region_examples(3, 128, seed=5, overlap=0.5)[1].masks, examples[1].masks)  # deterministic


def test_loss_falls_on_a_fixed_batch_when_tower_and_probe_train() -> None:
    tower = tiny_tower().train().requires_grad_(True)
    batch = region_examples(2, tower.config.image_size, seed=1, overlap=0.5)
    probe = RegionProbe(tower.channels)
    optimizer = torch.optim.AdamW([*tower.parameters(), *probe.parameters()], lr=3e-3)
    flip = torch.tensor([False, True])
    first = region_loss(tower, probe, batch, flip)
    for _ in range(15):
        loss = region_loss(tower, probe, batch, flip)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert region_loss(tower, probe, batch, flip).item() < 0.7 * first.item()


def test_flip_mirrors_image_and_masks_together() -> None:
    """A flipped image with flipped masks pools the flipped features: a flip-equivariant probe sees the same."""
    tower = tiny_tower().eval()
    example = region_examples(1, tower.config.image_size, seed=3, overlap=0.0)[0]
    probe = RegionProbe(tower.channels)
    mirrored = type(example)(example.pixels.flip(-1), example.masks.flip(-1), example.categories, example.colours)
    with torch.no_grad():
        straight = region_loss(tower, probe, [example], torch.tensor([False]))
        flipped_twice = region_loss(tower, probe, [mirrored], torch.tensor([True]))
    assert torch.allclose(straight, flipped_twice, atol=1e-5)


def test_pretraining_changes_the_tower_and_hands_it_back_frozen() -> None:
    tower = tiny_tower()
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    result = pretrain_vision_tower(tower, tower.config.image_size, VisionPretrainConfig(steps=3, images=4))
    after = tower.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in tower.parameters()) and not tower.training
    assert result["steps"] == 3 and torch.isfinite(torch.tensor(result["final_loss"]))
