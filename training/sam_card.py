"""The tiny SAM's model card, every figure computed from the saved file on held-out scenes.

    python -m training.sam_card osprey_model/checkpoints/tiny-sam

Prompted segmentation: mIoU of the best-of-three mask for one click on each visible shape and for its box
(jittered as in training). Automatic mask generation (the node's ``everything`` mode, the shipped
defaults): each predicted mask is matched one-to-one to a ground-truth shape by IoU ≥ 0.5, best first;
recall = matched shapes / shapes, precision = matched masks / masks. A scene seed range disjoint from
training's generator stream (training draws from ``default_rng(seed)``, evaluation from 10,000 + i).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from osprey_model.sam import AutomaticMaskConfig, AutomaticMaskGenerator, SamSegmenter, build_sam, get_sam_preset
from osprey_model.sam.segmenter import Prompt

from .train_tiny_sam import WEIGHTS_FILE, random_prompt, scene

EVAL_SEED = 10_000


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def match(predicted: np.ndarray, truth: list[np.ndarray], threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one (predicted, truth, IoU) pairs with IoU ≥ threshold, greedily by IoU."""
    pairs = sorted(((mask_iou(p, t), i, j) for i, p in enumerate(predicted) for j, t in enumerate(truth)), reverse=True)
    used_p, used_t, out = set(), set(), []
    for iou, i, j in pairs:
        if iou < threshold:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            out.append((i, j, iou))
    return out


def evaluate(
    segmenter: SamSegmenter, scenes: int, amg: AutomaticMaskConfig, size: tuple[int, int] = (320, 240)
) -> dict[str, float]:
    prompted: dict[str, list[float]] = {"point": [], "box": []}
    shapes = predicted = matched = 0
    matched_iou: list[float] = []
    amg_seconds = 0.0
    generator = AutomaticMaskGenerator(segmenter, amg)
    for i in range(scenes):
        rng = np.random.default_rng(EVAL_SEED + i)
        image, masks = scene(rng, *size)
        if not masks:
            continue
        frame = segmenter.encode(image)
        for kind in ("point", "box"):
            prompts: list[Prompt] = [random_prompt(rng, mask, kind) for mask in masks]
            result = segmenter.segment(frame, prompts, multimask="best")
            prompted[kind] += [mask_iou(m, p) for m, p in zip(masks, result.masks[:, 0], strict=True)]
        start = time.perf_counter()
        found = generator.generate(frame)
        amg_seconds += time.perf_counter() - start
        pairs = match(found.masks, masks)
        shapes, predicted, matched = shapes + len(masks), predicted + len(found), matched + len(pairs)
        matched_iou += [iou for _, _, iou in pairs]
    return {
        "miou_one_point": float(np.mean(prompted["point"])),
        "miou_box": float(np.mean(prompted["box"])),
        "amg_recall": matched / max(shapes, 1),
        "amg_precision": matched / max(predicted, 1),
        "amg_matched_miou": float(np.mean(matched_iou)) if matched_iou else 0.0,
        "amg_masks_per_scene": predicted / scenes,
        "shapes_per_scene": shapes / scenes,
        "amg_ms_per_frame": 1000 * amg_seconds / scenes,
    }


VALIDATION_SEED = 50_000  # scenes for choosing the generator's thresholds, apart from the card's held-out ones


def amg_scores(segmenter: SamSegmenter, config: AutomaticMaskConfig, seeds: range) -> tuple[float, float]:
    """Recall and precision of automatic mask generation on the scenes of ``seeds``."""
    generator = AutomaticMaskGenerator(segmenter, config)
    shapes = predicted = matched = 0
    for seed in seeds:
        image, masks = scene(np.random.default_rng(seed))
        found = generator.generate(image)
        shapes, predicted = shapes + len(masks), predicted + len(found)
        matched += len(match(found.masks, masks))
    return matched / max(shapes, 1), matched / max(predicted, 1)


def sweep(segmenter: SamSegmenter, scenes: int) -> list[dict[str, float]]:
    """Recall / precision over NMS, predicted-IoU and stability thresholds on validation scenes (not the
    card's)."""
    rows = []
    for nms in (0.5, 0.7):
        for iou in (0.5, 0.7, 0.88):
            for stability in (0.6, 0.85, 0.95):
                config = AutomaticMaskConfig(pred_iou_thresh=iou, stability_score_thresh=stability, nms_thresh=nms)
                recall, precision = amg_scores(segmenter, config, range(VALIDATION_SEED, VALIDATION_SEED + scenes))
                row = {"nms": nms, "pred_iou": iou, "stability": stability, "recall": recall, "precision": precision}
                rows.append(row)
                print(", ".join(f"{key} {value:.3g}" for key, value in row.items()))
    return rows


def write_card(checkpoint: Path, scores: dict[str, float], scenes: int, amg: AutomaticMaskConfig) -> Path:
    recorded = json.loads((checkpoint / "training.json").read_text())
    runs = recorded.get("runs", [recorded])  # training, then any fine-tuning from it
    commands = "\n".join(run["command"] for run in runs)
    minutes = sum(run["minutes"] for run in runs)
    steps = " then ".join(
        f"{run['steps']} steps (one-cycle lr {run['lr']:g}{', from the weights above' if run.get('init') else ''})"
        for run in runs
    )
    size_mb = (checkpoint / WEIGHTS_FILE).stat().st_size / 1e6
    preset = get_sam_preset("tiny")
    parameters = sum(p.numel() for p in build_sam(preset).parameters())
    text = f"""# tiny-sam: the embedded default segmenter

A tiny SAM trained by this project, on CPU, on its synthetic shapes world. The node's `everything` mode,
`~/segment_and_describe` and `osprey-describe --everything / --point / --box` use it when no SAM checkpoint
is given, so clicks, boxes and "describe everything" work on a fresh clone with no downloads. It knows
flat coloured shapes on a plain background and nothing else; for real scenes use the released
`sam_vit_h_4b8939.pth` (or vit_l / vit_b) with `sam_preset`.

## Reproduce

```bash
{commands}
python -m training.sam_card osprey_model/checkpoints/tiny-sam
```

Training took {minutes:.0f} minutes on {platform.machine()}, 2 CPU cores, torch {torch.__version__}.

## Model

segment-anything 1.0's own modules (`osprey_model/sam`, preset `tiny`): a ViT image encoder \
{preset.encoder_embed_dim} wide, {preset.encoder_depth} blocks ({len(preset.encoder_global_attn_indexes)} global, \
the rest in {preset.window_size}×{preset.window_size} windows), {preset.image_size} px input, \
{preset.image_size // preset.patch_size}×{preset.image_size // preset.patch_size} embedding; the released prompt \
encoder and a two-way-transformer mask decoder ({preset.decoder_depth} layers, MLP {preset.decoder_mlp_dim}) with \
three candidate masks and an IoU head. {parameters / 1e6:.1f} M parameters, stored in fp16 (`{WEIGHTS_FILE}`, \
{size_mb:.1f} MB), loaded into fp32.

## Training (`training/train_tiny_sam.py`)

SAM's recipe at toy scale: fresh scenes each step (2–5 shapes of 6 kinds × 6 colours, overlap 0–0.5,
320×240 or 640×480, pixel noise); every visible shape of a scene prompted at once, by clicks (sometimes
a second click on it and one off it) in one step and by boxes jittered by 5 % in the next; 20 × focal +
dice on the best of the three candidates; the IoU head regressed on each candidate's true IoU. One click
on the background per scene has an empty target (true IoU 0), so background prompts score low and
automatic mask generation drops them: in this world the background is not a region.
{steps}, {runs[0]["batch_scenes"]} scenes a step, AdamW, seed {runs[0]["seed"]}; loss (mean \
of the last 50 steps) {runs[-1]["final_loss_mean_last_50"]}.

## Held-out results ({scenes} scenes of 320×240, seeds {EVAL_SEED}..{EVAL_SEED + scenes - 1})

| prompt | mIoU |
|---|---|
| one click on the shape | {scores["miou_one_point"]:.3f} |
| box (jittered 5 %) | {scores["miou_box"]:.3f} |

| automatic mask generation (`everything`) | value |
|---|---|
| recall (shapes found, IoU ≥ 0.5) | {scores["amg_recall"]:.3f} |
| precision (masks that are a shape, one-to-one) | {scores["amg_precision"]:.3f} |
| mIoU of matched masks | {scores["amg_matched_miou"]:.3f} |
| masks per scene / shapes per scene | {scores["amg_masks_per_scene"]:.2f} / {scores["shapes_per_scene"]:.2f} |

Generator settings: {amg.points_per_side}×{amg.points_per_side} points, predicted IoU > {amg.pred_iou_thresh}, \
stability ≥ {amg.stability_score_thresh}, mask-IoU NMS {amg.nms_thresh}, islands under \
{amg.min_island_fraction:g} of a mask removed, area {amg.min_area_fraction:g}–{amg.max_area_fraction:g} of the \
image: what the node and `osprey-describe --everything` use with this model (`sam_preset: tiny`, thresholds at \
-1), chosen on validation scenes apart from these (`--sweep`). {scores["amg_ms_per_frame"]:.0f} ms a frame for \
the generator on this machine's CPU. Every figure above is computed from the shipped file by the last command; \
`eval_results.json` holds them.

## Known weaknesses

A toy, and a weak one at that: corners come out rounded (the 16×16 embedding at 256 px is coarse for
shapes 20–50 px across), a click on a small or mostly hidden shape often gives part of it or a neighbour,
and "everything" misses {1 - scores["amg_recall"]:.0%} of the shapes (mostly small or mostly hidden ones)
while {1 - scores["amg_precision"]:.0%} of its masks are no shape (usually part of one). Measured and not
done: a finer embedding (patch 8, 32×32) costs 3.5 s a training step against 0.9 s here.
"""
    path = checkpoint / "README.md"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument(
        "--sweep", type=int, default=0, help="only print recall / precision per threshold on N validation scenes"
    )
    args = parser.parse_args(argv)
    segmenter = SamSegmenter.from_pretrained("tiny", args.checkpoint / WEIGHTS_FILE)
    if args.sweep:
        sweep(segmenter, args.sweep)
        return
    amg = AutomaticMaskConfig.recommended(segmenter.preset)  # what the node and the CLI use with tiny
    scores = evaluate(segmenter, args.scenes, amg)
    results = {"held_out_scenes": args.scenes, "eval_seed": EVAL_SEED, "amg": amg.__dict__, **scores}
    (args.checkpoint / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(scores, indent=2))
    print("card:", write_card(args.checkpoint, scores, args.scenes, amg))


if __name__ == "__main__":
    main()
