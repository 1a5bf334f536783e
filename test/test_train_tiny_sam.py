"""The tiny-SAM recipe: prompts land on their shape, the loss terms behave, and steps lower the loss."""

from __future__ import annotations

import numpy as np
import torch

from osprey_model.sam import SamSegmenter, build_sam, get_sam_preset
from training.train_tiny_sam import low_res_target, mask_loss, random_prompt, scene, train_step


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
