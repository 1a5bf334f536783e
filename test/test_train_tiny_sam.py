"""The tiny-SAM recipe: prompts land on their shape, the loss terms behave, and steps lower the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osprey_model.sam import SamSegmenter, build_sam, get_sam_preset
from training.train_tiny_sam import (
    background_prompt,
    low_res_target,
    low_res_targets,
    mask_loss,
    random_prompt,
    scene,
    train_step,
    true_iou,
)


def test_prompts_fall_on_the_target_shape() -> None:
    rng = np.random.default_rng(0)
    image, masks = scene(rng)
    assert image.shape == (240, 320, 3) and masks
    mask = masks[0]
    point = random_prompt(rng, mask, "point").points[0].astype(int)
    assert mask[point[1], point[0]]
    box = random_prompt(rng, mask, "box").box
    ys, xs = np.nonzero(mask)
    assert abs(box[0] - xs.min()) < 0.2 * np.ptp(xs) + 2 and abs(box[3] - (ys.max() + 1)) < 0.2 * np.ptp(ys) + 2


def test_mask_loss_is_lowest_for_the_right_mask() -> None:
    target = torch.zeros(1, 8, 8)
    target[:, 2:6, 2:6] = 1
    right = torch.where(target > 0, 10.0, -10.0)
    logits = torch.cat([right, -right, torch.zeros(1, 8, 8)])
    loss = mask_loss(logits, target)
    assert loss.argmin() == 0 and loss[0] < 0.05 and loss[1] > loss[2]


def test_low_res_target_lies_in_the_padded_frame() -> None:
    segmenter = SamSegmenter(build_sam(get_sam_preset("tiny")))
    mask = np.zeros((240, 320), bool)
    mask[:, :160] = True  # the left half of the image
    target = low_res_target(segmenter, mask)
    assert target.shape == (1, 64, 64)
    assert target[0, :40, :28].min() > 0.99 and target[0, :, 36:].max() == 0  # 320 → 256 wide, 240 → 192 tall
    assert target[0, 50:].max() == 0  # below the image: padding


def test_a_few_steps_lower_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    segmenter = SamSegmenter(build_sam(get_sam_preset("tiny")))
    sam = segmenter.sam.train()
    optimizer = torch.optim.AdamW(sam.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = train_step(segmenter, np.random.default_rng(1), batch=2, kind="box")  # the same batch each time
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_a_background_click_lies_off_every_shape_and_its_target_scores_zero() -> None:
    rng = np.random.default_rng(4)
    _, masks = scene(rng)
    click = background_prompt(rng, masks).points[0].astype(int)
    assert not any(mask[click[1], click[0]] for mask in masks)
    assert background_prompt(rng, [np.ones((4, 4), bool)]) is None  # nothing but shapes: no background click
    empty = torch.zeros(1, 1, 8, 8)
    logits = torch.full((1, 3, 8, 8), -5.0)
    logits[0, 1, :2] = 5.0
    assert true_iou(logits, empty).tolist() == [[0.0, 0.0, 0.0]]  # whatever is predicted, nothing is right
    full = torch.ones(1, 1, 8, 8)
    assert true_iou(logits, full)[0, 1].item() == pytest.approx(16 / 64)


def test_every_shape_of_a_scene_is_one_prompt_and_extra_clicks_keep_their_labels() -> None:
    rng = np.random.default_rng(5)
    _, masks = scene(rng, 640, 480)
    prompts = [random_prompt(rng, mask, "point", extra_points=True) for mask in masks for _ in range(10)]
    for prompt, mask in zip(prompts, [m for m in masks for _ in range(10)], strict=True):
        xs, ys = prompt.points[:, 0].astype(int), prompt.points[:, 1].astype(int)
        assert (mask[ys, xs] == (prompt.labels == 1)).all()  # on the shape exactly when labelled 1
    assert any(len(p.points) > 1 for p in prompts)
    segmenter = SamSegmenter(build_sam(get_sam_preset("tiny")))
    targets = low_res_targets(segmenter, masks)
    assert targets.shape == (len(masks), 1, 64, 64)
