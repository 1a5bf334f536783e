"""The tiny LISA's model card, every figure computed from the saved checkpoint on held-out scenes and phrasings.

    python -m training.lisa_card osprey_model/checkpoints/tiny-lisa

Queries of each kind (colour by world knowledge, geometry, left-of, hidden-by, both) on scenes from a seed
range training never draws from, in phrasings training never saw. Beside the model, two baselines on the very
same queries: "everything" (every target answered with the union of all visible shapes, what an untrained
chain converges to) and "random shape" (every target answered with one visible shape drawn at random).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from osprey_model.lisa import LisaPredictor
from osprey_model.shapes_queries import MIN_VISIBLE_PIXELS

from .evaluate_lisa import EvalItem, ItemResult, evaluate, score_masks, summarise
from .lisa.shapes_data import EVAL_SEED, KINDS, VALIDATION_SEED, shapes_sample
from .train_tiny_lisa import CLIP_FOLDER, MODEL_FOLDER

CARD_PER_KIND = 40


def held_out_items(
    per_kind: int, seed: int = EVAL_SEED, held_out_phrasings: bool = True
) -> tuple[list[EvalItem], list[list[np.ndarray]]]:
    """``per_kind`` queries of each kind (in held-out phrasings unless told), and each item's visible shapes
    (for baselines)."""
    items, visible = [], []
    for k, kind in enumerate(KINDS):
        rng = np.random.default_rng(seed + 1000 * k)
        for i in range(per_kind):
            sample = shapes_sample(rng, held_out=held_out_phrasings, kind=kind)
            targets = [t.astype(np.uint8) for t in sample.targets]
            query = sample.query
            items.append(EvalItem(f"{kind}-{i}", sample.image, query.query, targets, kind, query.answer))
            visible.append([m for m in sample.masks if m.sum() >= MIN_VISIBLE_PIXELS])
    return items, visible


def validation_scores(model_dir: Path, clip_dir: Path, per_kind: int) -> dict[str, float]:
    """gIoU / cIoU on validation scenes in training's phrasings: what a run may choose by without looking at
    the card's held-out scenes or phrasings."""
    predictor = LisaPredictor.from_pretrained(model_dir, clip_dir)
    items, _ = held_out_items(per_kind, VALIDATION_SEED, held_out_phrasings=False)
    scores = summarise(evaluate(predictor, items))
    return {"giou": scores.giou, "ciou": scores.ciou}


def same_text(answer: str, expected: str) -> bool:
    """Equal up to spacing before punctuation (decoding spells "[SEG]." as "[SEG] .")."""
    return re.sub(r"\s+([.,)])", r"\1", answer) == re.sub(r"\s+([.,)])", r"\1", expected)


def baseline(name: str, items: list[EvalItem], visible: list[list[np.ndarray]], seed: int = 0) -> list[ItemResult]:
    rng = np.random.default_rng(seed)
    results = []
    for item, shapes in zip(items, visible, strict=True):
        if name == "everything":
            masks = np.stack([np.logical_or.reduce(shapes)] * len(item.targets))
        else:
            masks = np.stack([shapes[int(rng.integers(len(shapes)))] for _ in item.targets])
        results.append(score_masks(item.id, item.kind, item.query, name, masks, item.targets))
    return results


def table(results: dict[str, list[ItemResult]]) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {kind or "all": {gIoU, cIoU, masks}}}."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method, rows in results.items():
        out[method] = {}
        for kind in (*KINDS, "all"):
            chosen = [r for r in rows if kind == "all" or r.kind == kind]
            scores = summarise(chosen)
            out[method][kind] = {"giou": round(scores.giou, 4), "ciou": round(scores.ciou, 4), "masks": scores.masks}
    return out


def margins(
    model: list[ItemResult], baseline_results: list[ItemResult], draws: int = 2000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """The model's lead over a baseline on the same queries, gIoU and cIoU, with a 95 % paired bootstrap
    interval over queries (a query's masks are drawn together): whether a lead is clear or within the noise of
    a few hundred masks."""

    def lead(rows: np.ndarray) -> tuple[float, float]:
        ours, theirs = summarise([model[i] for i in rows]), summarise([baseline_results[i] for i in rows])
        return ours.giou - theirs.giou, ours.ciou - theirs.ciou

    rng = np.random.default_rng(seed)
    drawn = np.array([lead(rng.integers(len(model), size=len(model))) for _ in range(draws)])
    observed = lead(np.arange(len(model)))
    return {
        metric: {"lead": round(observed[m], 4), "low": round(float(np.percentile(drawn[:, m], 2.5)), 4),
                 "high": round(float(np.percentile(drawn[:, m], 97.5)), 4)}
        for m, metric in enumerate(("giou", "ciou"))
    }  # fmt: skip


PROMPT_ORDERS = {
    False: "the released template, the image before the question.",
    True: "the question before the image (`lisa_question_first` in config.json), a departure from the released "
    "template: a 4-layer LLM trained from nothing on a CPU learns to find the shape a query means in that order "
    "and not in the released one (training/README.md, LISA).",
}


def write_card(folder: Path, scores: dict, extra: dict) -> Path:
    rows = []
    for kind in (*KINDS, "all"):
        cells = [f"{scores[m][kind]['giou']:.3f} / {scores[m][kind]['ciou']:.3f}" for m in scores]
        label = f"**{kind}**" if kind == "all" else kind
        rows.append(f"| {label} | {scores['tiny LISA'][kind]['masks']} | " + " | ".join(cells) + " |")
    training = json.loads((folder / MODEL_FOLDER / "training.json").read_text())
    stage_lines = "\n".join(
        f"| {run['stage']} | {run.get('steps', '')} | {run['minutes']} |" for run in training["runs"]
    )
    lead_lines = "\n".join(
        f"- Lead over {name}: "
        + ", ".join(
            f"{label} {m[metric]['lead']:+.3f} (95 % CI {m[metric]['low']:+.3f} to {m[metric]['high']:+.3f})"
            for metric, label in (("giou", "gIoU"), ("ciou", "cIoU"))
        )
        + " (paired bootstrap over queries)."
        for name, m in extra["margins"].items()
    )
    shipped = "the last stage's weights."
    if "validation" in training:
        chosen, figures = training["validation"], training["validation"]["scores"]
        shipped = (
            f"the {chosen['shipped']} stage's weights, chosen on {chosen['per_kind']} validation queries per kind "
            f"(scenes from seeds {VALIDATION_SEED}+, training's phrasings; gIoU / cIoU: "
            + ", ".join(f"{stage} {v['giou']:.3f} / {v['ciou']:.3f}" for stage, v in figures.items())
            + ")."
        )
    text = f"""# tiny LISA (shapes world)

A reasoning-segmentation model at toy scale, in the released LISA layout: `{MODEL_FOLDER}/` (config.json,
safetensors, tokenizer with `<im_start>`, `<im_end>`, `[SEG]`) and its CLIP tower's own folder
`{CLIP_FOLDER}/`. A query that never names the shape goes in ("the shape the colour of a ripe banana"); the
meant shape's mask comes out, after the answer names it and says roughly where it is ("Sure, the yellow
star (column 3, row 5) [SEG]."). For the demo and
the tests: it knows nothing but the shapes world.

- LLM: LLaMA {extra["llm"]}, vocabulary {extra["vocab"]} (a BPE trained on the shapes world's text).
- CLIP: ViT {extra["tower"]}, the second-to-last layer, CLS dropped; the frame squashed to a square (no
  centre crop).
- SAM: the embedded tiny SAM (`tiny-sam`), its mask decoder fine-tuned here.
- Prompt: {extra["prompt_order"]}

## Held-out evaluation

{extra["queries"]} queries on scenes from seeds training never draws ({EVAL_SEED}+), in phrasings training
never saw. gIoU / cIoU per kind (the released metric: mean per-mask IoU; summed intersection over summed
union). "everything": each target answered with the union of all shapes; "random shape": with one visible
shape drawn at random.

| kind | masks | {" | ".join(scores)} |
|---|---|{"---|" * len(scores)}
{chr(10).join(rows)}

{lead_lines}
- Answers with the right number of `[SEG]`: {extra["seg_count_accuracy"]:.1%}.
- Time per query: {extra["seconds_per_query"] * 1000:.0f} ms on {extra["machine"]} (CLIP + SAM encoders,
  generation, SAM decoder).

Reproduce: `python -m training.lisa_card osprey_model/checkpoints/tiny-lisa` (this table, from the shipped
files); train: `{training["command"]}`.

## Training (a curriculum, on CPU)

A toy LLM → `[SEG]` → SAM chain trained end to end from scratch learns to segment every shape at once and
stays there; so each part learns its job first.

| stage | steps | minutes |
|---|---|---|
{stage_lines}

1. **clip**: the CLIP tower from per-patch labels (the colour and kind of shape seen there).
2. **click**: SAM's mask decoder learns one-token prompts (a click's embedding without SAM's padding token,
   the form a `[SEG]` prompt has).
3. **answer**: LLM and projector learn the answers' text (which shape, roughly where) from a pool of scenes
   whose tower features are computed once (no SAM, so many cheap steps): the lookup of the meant shape.
4. **ground**: LLM, projector, `text_hidden_fcs` and SAM's mask decoder in full (LISA starts from a trained
   LLaVA; this one from nothing): text CE + the released mask loss + a regression of each `[SEG]` prompt onto
   the embedding of a click deep inside its target.
5. **lisa**: the released recipe — LoRA r=8 (α 16, dropout 0.05) on q/v, `embed_tokens`, `lm_head`,
   `text_hidden_fcs` and SAM's mask decoder; CE ×1 + BCE ×2 + Dice ×0.5; AdamW 3e-4, WarmupDecayLR with 100
   warm-up steps; LoRA merged into the saved weights.

{textwrap.fill(f"Shipped: {shipped} Each stage's `metrics.csv` is written under the training `--out` folder.", 110)}
"""
    path = folder / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help=f"folder holding {MODEL_FOLDER}/ and {CLIP_FOLDER}/")
    parser.add_argument("--per-kind", type=int, default=CARD_PER_KIND)
    args = parser.parse_args(argv)
    predictor = LisaPredictor.from_pretrained(args.folder / MODEL_FOLDER, args.folder / CLIP_FOLDER)
    items, visible = held_out_items(args.per_kind)
    start = time.perf_counter()
    results = {"tiny LISA": evaluate(predictor, items)}
    seconds = (time.perf_counter() - start) / len(items)
    results["everything"] = baseline("everything", items, visible)
    results["random shape"] = baseline("random shape", items, visible)
    scores = table(results)
    leads = {name: margins(results["tiny LISA"], results[name]) for name in ("everything", "random shape")}
    right_count = np.mean([r.answer.count("[SEG]") == len(r.ious) for r in results["tiny LISA"]])
    named = np.mean(
        [same_text(r.answer, item.expected_answer) for r, item in zip(results["tiny LISA"], items, strict=True)]
    )
    assert predictor.model.vision_tower is not None  # a predictor always has its tower
    config, tower = predictor.model.config, predictor.model.vision_tower.config
    extra = {
        "llm": f"{config.hidden_size} wide, {config.num_hidden_layers} layers",
        "tower": f"{tower.hidden_size} wide, {tower.num_hidden_layers} layers, {tower.image_size} px, "
        f"{tower.patch_size} px patches ({(tower.image_size // tower.patch_size) ** 2} image tokens)",
        "prompt_order": PROMPT_ORDERS[config.question_first],
        "queries": len(items),
        "seg_count_accuracy": float(right_count),
        "named_accuracy": float(named),
        "seconds_per_query": seconds,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "vocab": predictor.model.config.vocab_size,
        "margins": leads,
    }
    (args.folder / "eval_results.json").write_text(json.dumps({"scores": scores, **extra}, indent=2) + "\n")
    print(write_card(args.folder, scores, extra))
    for method, by_kind in scores.items():
        print(f"{method:>14}: gIoU {by_kind['all']['giou']:.3f}  cIoU {by_kind['all']['ciou']:.3f}")


if __name__ == "__main__":
    main()
