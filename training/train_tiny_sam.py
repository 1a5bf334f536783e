"""Train the embedded tiny SAM on the shapes world: a point or a box on a shape → that shape's visible mask.

    python -m training.train_tiny_sam --out osprey_model/checkpoints/tiny-sam

The recipe is SAM's at toy scale: every visible shape of a scene is prompted at once (one decoder batch per
image), by points in one step and by boxes in the next; three candidate masks per prompt, the loss
(20 × focal + dice) taken on the best of the three, and the IoU head regressed on each candidate's true
IoU. A point on the background has an empty target (its true IoU is 0), so the IoU head learns to score
background prompts low and automatic mask generation drops them: on the shapes world the background is not
a region. Everything is trained, as the released SAM is; the image encoder is the ``tiny`` preset's ViT
(128 wide, 4 blocks, 1.6 M parameters) at 256 px. The card's figures are computed from the saved file by
``training.sam_card``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from osprey_model.sam import SamSegmenter, build_sam, get_sam_preset, load_sam
from osprey_model.sam.segmenter import Prompt
from osprey_model.shapes import random_shapes, render

WIDTH, HEIGHT = 320, 240
SCENE_SIZES = ((320, 240), (640, 480))  # the synthetic camera's default and the demo's
WEIGHTS_FILE = "sam_tiny.safetensors"
MIN_VISIBLE_PIXELS = 30  # the synthetic camera's rule: a shape hidden below this is not a region


def scene(rng: np.random.Generator, width: int = WIDTH, height: int = HEIGHT) -> tuple[np.ndarray, list[np.ndarray]]:
    """An image and the visible masks of its shapes (shapes hidden below 30 pixels are left out)."""
    shapes = random_shapes(rng, width, height, int(rng.integers(2, 6)), overlap=float(rng.uniform(0.0, 0.5)))
    image, masks = render(shapes, width, height, rng)
    area = MIN_VISIBLE_PIXELS * (width * height) / (WIDTH * HEIGHT)
    return image, [m for m in masks if m.sum() >= area]


def random_prompt(rng: np.random.Generator, mask: np.ndarray, kind: str, extra_points: bool = False) -> Prompt:
    """A click on the shape (``point``; with ``extra_points`` sometimes a second click on it and one off it)
    or its box, jittered by 5 % of its size (``box``)."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    if kind == "point":
        i = int(rng.integers(len(xs)))
        points, labels = [[xs[i], ys[i]]], [1]
        if extra_points and rng.random() < 0.3:
            j = int(rng.integers(len(xs)))
            points.append([xs[j], ys[j]])
            labels.append(1)
        if extra_points and rng.random() < 0.3:
            off_y, off_x = np.nonzero(~mask)
            k = int(rng.integers(len(off_x)))
            points.append([off_x[k], off_y[k]])
            labels.append(0)
        return Prompt(points=np.array(points, np.float32), labels=np.array(labels))
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    jitter = rng.normal(0, 0.05, 4) * np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
    box = np.array([x0, y0, x1, y1], np.float32) + jitter
    box = np.clip(box, 0, [width - 1, height - 1, width, height])
    if box[2] <= box[0] + 1 or box[3] <= box[1] + 1:
        box = np.array([x0, y0, x1, y1], np.float32)
    return Prompt(box=box)


def background_prompt(rng: np.random.Generator, masks: list[np.ndarray]) -> Prompt | None:
    """A click on no shape (None when the shapes cover the picture)."""
    ys, xs = np.nonzero(~np.logical_or.reduce(masks))
    if not len(xs):
        return None
    i = int(rng.integers(len(xs)))
    return Prompt(points=np.array([[xs[i], ys[i]]], np.float32), labels=np.array([1]))


def low_res_targets(segmenter: SamSegmenter, masks: list[np.ndarray]) -> torch.Tensor:
    """Masks (N, 1, h, w) in the decoder's low-res frame: resized as the image is, padded, pooled 4×."""
    size = segmenter.sam.image_encoder.img_size
    height, width = masks[0].shape
    input_hw = segmenter.transform.get_preprocess_shape(height, width, size)
    stacked = torch.from_numpy(np.stack(masks)).float()[:, None]
    resized = F.interpolate(stacked, size=input_hw, mode="area")
    padded = F.pad(resized, (0, size - input_hw[1], 0, size - input_hw[0]))
    low = segmenter.sam.prompt_encoder.mask_input_size[0]
    return F.avg_pool2d(padded, size // low)


def low_res_target(segmenter: SamSegmenter, mask: np.ndarray) -> torch.Tensor:
    return low_res_targets(segmenter, [mask])[0]


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """20 × focal + dice per candidate mask, as SAM is trained: logits (..., K, h, w), target (..., 1, h, w)
    → (..., K)."""
    target = target.expand_as(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    alpha = 0.25 * target + 0.75 * (1 - target)
    focal = (alpha * (1 - p_t) ** 2 * ce).flatten(-2).mean(-1)
    inter = (prob * target).flatten(-2).sum(-1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(-2).sum(-1) + target.flatten(-2).sum(-1) + 1)
    return 20 * focal + dice


def true_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each thresholded candidate with the target; 0 for an empty target, whatever is predicted (a
    prompt on the background has no right mask, so the IoU head should say so)."""
    pred, truth = logits > 0, (target > 0.5).expand_as(logits)
    union = (pred | truth).flatten(-2).sum(-1)
    return (pred & truth).flatten(-2).sum(-1) / union.clamp(min=1)


def train_step(segmenter: SamSegmenter, rng: np.random.Generator, batch: int, kind: str) -> torch.Tensor:
    """One step on ``batch`` fresh scenes: every shape of each scene prompted by ``kind`` in one decoder call,
    plus one background click per scene in point steps."""
    sam = segmenter.sam
    width, height = SCENE_SIZES[int(rng.integers(len(SCENE_SIZES)))]
    scenes = [s for s in (scene(rng, width, height) for _ in range(batch)) if s[1]]
    pixels = torch.stack(
        [torch.as_tensor(segmenter.transform.apply_image(image)).permute(2, 0, 1) for image, _ in scenes]
    )
    embeddings = sam.image_encoder(sam.preprocess(pixels.float()))
    losses = []
    for (image, masks), embedding in zip(scenes, embeddings, strict=True):
        prompts = [random_prompt(rng, mask, kind, extra_points=True) for mask in masks]
        targets = list(masks)
        if kind == "point" and (background := background_prompt(rng, masks)) is not None:
            prompts.append(background)
            targets.append(np.zeros_like(masks[0]))
        points, labels, boxes, _ = segmenter.prompt_tensors(prompts, image.shape[:2])
        sparse, dense = sam.prompt_encoder(points=None if points is None else (points, labels), boxes=boxes, masks=None)
        low_res, iou = sam.mask_decoder(embedding[None], sam.prompt_encoder.get_dense_pe(), sparse, dense, True)
        target = low_res_targets(segmenter, targets)
        per_candidate = mask_loss(low_res, target)  # (N, 3)
        with torch.no_grad():
            iou_target = true_iou(low_res, target)
        losses.append(per_candidate.min(dim=1).values.mean() + F.mse_loss(iou, iou_target))
    return torch.stack(losses).mean()


def save_weights(segmenter: SamSegmenter, out: Path) -> Path:
    """fp16 on disk (4 M parameters, 8 MB); loaded into fp32 by ``load_sam``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / WEIGHTS_FILE
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in segmenter.sam.state_dict().items()}
    save_file(state, str(path))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=8, help="scenes per step (every shape of each is prompted)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--init", type=Path, help="start from these weights (a saved sam_tiny.safetensors)")
    parser.add_argument("--warmup", type=float, default=0.05, help="fraction of the steps the lr rises over")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    segmenter = SamSegmenter(build_sam(get_sam_preset("tiny")))
    if args.init is not None:
        segmenter = SamSegmenter(load_sam("tiny", args.init))
    sam = segmenter.sam.train()
    optimizer = torch.optim.AdamW(sam.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps, pct_start=args.warmup)
    start = time.time()
    progress = tqdm(range(args.steps), desc="tiny SAM", mininterval=10)
    log = []
    for step in progress:
        loss = train_step(segmenter, rng, args.batch, "point" if step % 2 == 0 else "box")
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        log.append(loss.item())
        progress.set_postfix(loss=f"{np.mean(log[-50:]):.3f}")
    sam.eval()
    path = save_weights(segmenter, args.out)
    training = {
        "command": "python -m training.train_tiny_sam " + " ".join(argv if argv is not None else []),
        "steps": args.steps,
        "batch_scenes": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "init": str(args.init) if args.init else None,
        "minutes": round((time.time() - start) / 60, 1),
        "final_loss_mean_last_50": round(float(np.mean(log[-50:])), 4),
    }
    earlier = []  # a fine-tuning run records the runs its starting weights came from
    if args.init is not None and (args.init.parent / "training.json").is_file():
        recorded = json.loads((args.init.parent / "training.json").read_text())
        earlier = recorded.get("runs", [recorded])
    (args.out / "training.json").write_text(json.dumps({"runs": [*earlier, training]}, indent=2) + "\n")
    print(json.dumps(training), "→", path)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
