"""The model card of a checkpoint trained by ``train_tiny``: data, stages, steps, time, held-out scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .evaluation.mask_vs_box import RegionScores, markdown_table
from .stages import STAGES
from .vision_pretrain import VisionPretrainConfig


def _final_losses(work: Path) -> dict[int, tuple[int, float]]:
    out = {}
    for stage in STAGES:
        metrics = work / f"stage{stage}" / "metrics.csv"
        if metrics.is_file():
            rows = list(csv.DictReader(metrics.open()))
            tail = rows[-20:]
            out[stage] = (int(rows[-1]["step"]), sum(float(r["loss"]) for r in tail) / len(tail))
    return out


def _stage_rows(results: dict) -> str:
    args = results["args"]
    losses = _final_losses(Path(args["work"]))
    return "\n".join(
        f"| {n} {s.name} | {', '.join(s.trains)} | {args['steps'][n - 1]} | {args['lr'][n - 1]:g} | "
        f"{results['stage_seconds'][str(n)] / 60:.1f} min | {losses.get(n, (0, float('nan')))[1]:.3f} |"
        for n, s in STAGES.items()
    )


def prompt_kind_table(trained: dict[str, dict[str, RegionScores]]) -> str:
    """Models (by the prompt kind they were trained with) × the prompt kind they are asked with."""
    rows = [
        "| trained with | asked with | regions | category acc. | colour acc. | SS | S-IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, scores in trained.items():
        for asked in (kind, *(k for k in scores if k != kind)):  # its own prompt kind first
            s = scores[asked]
            rows.append(
                f"| {kind} | {asked} | {s.regions} | {s.category_accuracy:.3f} | {s.colour_accuracy:.3f} | "
                f"{s.semantic_similarity:.3f} | {s.semantic_iou:.3f} |"
            )
    return "\n".join(rows)


def _box_verdict(mask: RegionScores, box: RegionScores) -> str:
    """What the two own-prompt rows say, with the noise of a difference of two accuracies beside it."""

    def standard_error(a: float, b: float) -> float:
        return 100 * float(np.sqrt(a * (1 - a) / mask.regions + b * (1 - b) / box.regions))

    category = 100 * (mask.category_accuracy - box.category_accuracy)
    colour = 100 * (mask.colour_accuracy - box.colour_accuracy)
    return (
        f"Each model asked with the prompt kind it was trained with, masks beat boxes by {colour:+.1f} points of "
        f"colour accuracy (± {standard_error(mask.colour_accuracy, box.colour_accuracy):.1f}, one standard error "
        f"of the difference), {category:+.1f} of category accuracy "
        f"(± {standard_error(mask.category_accuracy, box.category_accuracy):.1f}), "
        f"{100 * (mask.semantic_similarity - box.semantic_similarity):+.1f} of SS and "
        f"{100 * (mask.semantic_iou - box.semantic_iou):+.1f} of S-IoU. Training on boxes recovers much of what "
        "the mask-trained model loses when handed boxes (the crossed rows), but not all: a box on piled-up "
        "shapes holds parts of its neighbours, and nothing in it says which of them is meant."
    )


def write_box_baseline_card(checkpoint: Path, results: dict) -> Path:
    """The card of the box-trained twin (``train_tiny --box-prompts --init-from``)."""
    args = results["args"]
    reference = results["reference"]
    trained = {
        "mask": {k: RegionScores(**v) for k, v in reference["scores"].items()},
        "box": {k: RegionScores(**v) for k, v in results["scores"].items()},
    }
    own_mask, own_box = trained["mask"]["mask"], trained["box"]["box"]
    config = json.loads((checkpoint / "config.json").read_text())
    text = f"""# tiny-shapes-box: the box-prompt baseline of tiny-shapes

The paper's comparison done as the paper did it: the same tiny Osprey, trained on the same data with the
same stages, steps and learning rates as `{reference["checkpoint"]}`, but with every region given as its
**filled bounding box** instead of its mask, in training and in use. It shares that model's tokenizer and
its frozen vision tower (`config.json` points at `{config["mm_vision_tower"]}`), so the prompt kind is the
only difference. It is a baseline for evaluation, not a model to run: the node uses masks.

## Reproduce

```bash
{results["command"]}
```

{results["total_seconds"] / 60:.1f} minutes on {results.get("machine", "the project CPU machine")}, torch
{results["torch"]} (data generation, three stages, evaluation of both models; no stage 0, the tower is shared).

## Stages

| stage | trains | steps | lr | time | final loss (mean of last 20 steps) |
|---|---|---|---|---|---|
{_stage_rows(results)}

Batch {args["batch_size"]}; regions in stages 2 and 3 are the filled boxes of the masks
(`RegionDataset(box_prompts=True)`).

## Held-out evaluation: each model with its own prompt kind, and crossed

{args["eval_images"]} held-out images with heavy overlap (overlap 0.85), every region asked with the short
prompt; the same scenes and regions for both models.

{prompt_kind_table(trained)}

{_box_verdict(own_mask, own_box)}
"""
    path = checkpoint / "README.md"
    path.write_text(text)
    return path


def write_model_card(checkpoint: Path) -> Path:
    results = json.loads((checkpoint / "eval_results.json").read_text())
    if results.get("trained_with") == "box":
        return write_box_baseline_card(checkpoint, results)
    args = results["args"]
    scores = {k: RegionScores(**v) for k, v in results["scores"].items()}
    config = json.loads((checkpoint / "config.json").read_text())
    extractor = config["osprey_mask_extractor"]
    sizes = {p.name: p.stat().st_size for p in checkpoint.iterdir() if p.is_file()}
    stage_rows = _stage_rows(results)
    mask, box = scores["mask"], scores["box"]
    vision = results.get("vision_pretrain", {"steps": 0})
    if vision["steps"]:
        defaults = VisionPretrainConfig()  # train_tiny sets only the steps and the seed
        tower = "**pretrained by this project's stage 0** (below), then **frozen** in stages 1–3 as the recipe says"
        stage0 = (
            f"Stage 0, vision pretraining (not an Osprey stage: it stands in for the CLIP pretraining of the "
            f"released tower, which cannot be downloaded here; `training/vision_pretrain.py`): the ConvNeXt trunk "
            f"and a throw-away probe learn the category and colour of shapes-world regions from features pooled "
            f"inside each mask at res2..res5, {vision['steps']} steps of {defaults.batch_size} of "
            f"{defaults.images} generated scenes (mirrored at random), one-cycle lr {defaults.learning_rate:g}, "
            f"{vision['seconds'] / 60:.1f} min, loss {vision['first_loss']:.2f} → {vision['final_loss']:.3f} "
            f"(mean of the last 50 steps)."
        )
        weakness = (
            f"Known weakness: shapes are the harder half. Category accuracy is {mask.category_accuracy:.2f} "
            f"against colour {mask.colour_accuracy:.2f} here (chance 1/6): small or mostly hidden shapes are where "
            "it errs, e.g. calling a small diamond a star or a triangle in the right colour. A longer stage 0 "
            "or stage 3 are the next things to try."
        )
    else:
        tower = "**random weights, frozen** in every stage as the recipe says"
        stage0 = "No stage 0: the vision tower keeps its random weights."
        weakness = (
            "Known weakness: with a random tower, a region's shape reaches the LLM only through the pos token "
            "(the resized mask, through an MLP that is not translation-invariant); colours are learned, shapes "
            "barely. Give the tower a stage 0 (`--vision-steps`)."
        )
    text = f"""# tiny-shapes: the embedded default Osprey

A tiny Osprey trained by this project, on CPU, on its synthetic shapes world. It is the model the ROS node
and `make demo` run when no `model_dir` is given. It knows 6 shapes (circle, square, triangle, star,
hexagon, diamond) in 6 colours, and nothing else: it exists so that the whole pipeline runs, and runs
meaningfully, on any machine without downloads. For real scenes use the released Osprey-7b weights.

## Reproduce

```bash
{results["command"]}
```

{results["total_seconds"] / 60:.1f} minutes in all on {results.get("machine", "the project CPU machine (2 cores)")},
torch {results["torch"]} (data generation, stage 0, three stages, evaluation). Deterministic for the seed up
to floating-point nondeterminism of multithreaded CPU kernels.

## Model

- Vision: open_clip `TimmModel` around timm `convnext_zepto_rms` (dims 32/64/128/256), 128×128 input,
  {tower} (stored in fp16: `{config["mm_vision_tower"]}`).
- Projector `mlp2x_gelu` 128→{config["hidden_size"]}; mask extractor {extractor["embed_dim"]} wide,
  {extractor["mask_shape"]}² spatial mask.
- LLM: a LLaMA with {config["num_hidden_layers"]} layers, hidden {config["hidden_size"]},
  {config["num_attention_heads"]} heads, vocabulary {config["vocab_size"]} (a BPE tokenizer trained on the
  shapes text), trained from scratch. Chosen over SmolLM2-135M + LoRA because a 135M model does not train
  through three stages in 45 minutes on 2 CPU cores; this one does.
- Files: {", ".join(f"{k} ({v / 1e6:.2f} MB)" for k, v in sorted(sizes.items()) if k != "README.md")}.

## Data (shapes world, `training/shapes_world.py`)

{args["train_images"]} training images of 320×240 with 3–5 overlapping shapes (overlap 0.5, each shape at
least 30% visible), annotated in the Osprey-724K format: multi-region conversations (colour and shape of
`<regionN>`), short-form questions asked inline (short description or category), detailed descriptions
(colour, shape, position, occluders), and yes/no questions with negatives mined by all-MiniLM-L6-v2 plus
the nearest object's class. Stage 1 reads LLaVA-style captions; stage 2 COCO-style instances.

## Stages

{stage0}

| stage | trains | steps | lr | time | final loss (mean of last 20 steps) |
|---|---|---|---|---|---|
{stage_rows}

Batch {args["batch_size"]}, AdamW, cosine schedule with 3% warmup, the vision tower's outputs cached (it is frozen).
Learning rates are higher than the 7B recipe's: this model starts from scratch. Stages 1 and 2 stay near
the loss of a uniform guess because they train into a frozen LLM that has not learned the language yet
(the 7B recipe starts from Vicuna); stage 3, which trains the LLM too, does the learning.

## Held-out evaluation: masks versus boxes

{args["eval_images"]} held-out images with heavy overlap (overlap 0.85); every region asked with the short
prompt, once with its mask and once with its mask replaced by the filled bounding box.

{markdown_table(scores)}

Masks beat boxes by {100 * (mask.category_accuracy - box.category_accuracy):+.1f} points of category
accuracy and {100 * (mask.colour_accuracy - box.colour_accuracy):+.1f} points of colour accuracy: a box on
piled-up shapes holds parts of its neighbours, a mask does not (the paper's central claim, in miniature).

{weakness}
"""
    path = checkpoint / "README.md"
    path.write_text(text)
    return path


if __name__ == "__main__":
    import sys

    print(write_model_card(Path(sys.argv[1])))
