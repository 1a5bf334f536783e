"""Train the embedded default: a tiny Osprey on the shapes world, through the three stages, on CPU.

The LLM is a tiny LLaMA trained from scratch on the shapes text (a 135M-parameter LLM does not train in
45 minutes on 2 CPU cores); the vision tower is a ConvNeXt-zepto that a stage 0 first teaches shapes (it
stands in for the released tower's CLIP pretraining, see ``vision_pretrain``) and that stages 1–3 keep
frozen, as the recipe demands. Then it evaluates masks against boxes on held-out, heavily overlapping
scenes and writes the checkpoint with its model card.

    python -m training.train_tiny --out osprey_model/checkpoints/tiny-shapes

The paper's box baseline is a second model trained the same way with every region given as its filled
bounding box; it shares the first model's tokenizer and frozen tower, so the prompt kind is the only
difference (stage 0 and the tokenizer are not Osprey stages):

    python -m training.train_tiny --out osprey_model/checkpoints/tiny-shapes-box --box-prompts \
        --init-from osprey_model/checkpoints/tiny-shapes
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from osprey_model import OspreyForCausalLM, OspreyPredictor, get_preset
from osprey_model.conversation import PROMPTS, SHORT_ANSWER_SUFFIX, SYSTEM, single_region_prompt
from osprey_model.shapes import CATEGORIES
from osprey_model.tiny import save_open_clip_file
from osprey_model.tokenization import add_region_tokens, load_tokenizer

from . import shapes_world
from .data.dataset import RegionDataset
from .data.records import REGION_TEXT_QUESTIONS, load_caption_records, load_osprey_records, load_region_text_records
from .data.robustness import NegativeMiner, minilm_embedder
from .evaluation.mask_vs_box import evaluate, markdown_table
from .model_card import write_model_card
from .tokenizer import train_tokenizer
from .trainer import TrainConfig, Trainer
from .vision_pretrain import VisionPretrainConfig, pretrain_vision_tower

logger = logging.getLogger(__name__)


def corpus(files: dict[str, Path]) -> list[str]:
    """Every text the model will read or write, for the tokenizer."""
    texts = [SYSTEM, single_region_prompt("short"), *PROMPTS.values(), *REGION_TEXT_QUESTIONS, SHORT_ANSWER_SUFFIX]
    for kind in ("conversation", "short_form", "detail_description", "positive_negative", "captions"):
        for record in json.loads(files[kind].read_text()):
            texts += [turn["value"] for turn in record["conversations"]]
    return texts


SHIPPED_CLIP_FILE = "open_clip_model.safetensors"


def tiny_config(vocab_size: int):
    config = get_preset("tiny")
    config.vocab_size = vocab_size
    config.hidden_size, config.intermediate_size = 128, 344
    config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads = 4, 4, 4
    config.max_length = config.max_position_embeddings = 512
    # The pos token is where a region's shape comes from: a 56² mask (the 7B model's 112² at half the
    # input size) through a 128-wide MLP. At 28² / 64 wide the model learned colours but barely shapes.
    config.mask_extractor.embed_dim, config.mask_extractor.mask_shape = 128, 56
    config.mm_vision_tower = SHIPPED_CLIP_FILE
    return config


def run_stage(model, tokenizer, records, stage: int, out: Path, args, steps: int, lr: float) -> Path:
    dataset = RegionDataset(
        records,
        tokenizer,
        model.config.vision.image_size,
        image_tokens(model),
        model.config.max_length,
        box_prompts=args.box_prompts,
    )
    shutil.rmtree(out / f"stage{stage}", ignore_errors=True)  # a fresh recipe run, not a resume
    config = TrainConfig(
        stage=stage, output_dir=str(out / f"stage{stage}"), max_steps=steps, batch_size=args.batch_size,
        learning_rate=lr, cache_vision_features=True, seed=args.seed,
    )  # fmt: skip
    trainer = Trainer(model, dataset, config, tokenizer)
    start = time.monotonic()
    path = trainer.train()
    logger.info("stage %d: %d steps in %.0f s", stage, steps, time.monotonic() - start)
    shutil.copy(out / SHIPPED_CLIP_FILE, path / SHIPPED_CLIP_FILE)
    return path


SHIPPED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def export_checkpoint(stage_dir: Path, out: Path, shared_tower_from: Path | None) -> None:
    """The files a user needs. A model trained on another checkpoint's tower points at that file instead of
    shipping a second copy of it."""
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        shutil.copy(stage_dir / name, out / name)
    if shared_tower_from is None:
        shutil.copy(stage_dir / SHIPPED_CLIP_FILE, out / SHIPPED_CLIP_FILE)
        return
    (out / SHIPPED_CLIP_FILE).unlink(missing_ok=True)
    config = json.loads((out / "config.json").read_text())
    config["mm_vision_tower"] = os.path.relpath(shared_tower_from.resolve() / SHIPPED_CLIP_FILE, out.resolve())
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def image_tokens(model: OspreyForCausalLM) -> int:
    return (model.config.vision.image_size // model.vision_tower.strides[2]) ** 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the final checkpoint goes")
    parser.add_argument("--work", type=Path, default=Path(".cache/train-tiny"), help="data and stage outputs")
    parser.add_argument("--train-images", type=int, default=1500)
    parser.add_argument("--eval-images", type=int, default=150)
    parser.add_argument("--steps", type=int, nargs=3, default=(150, 300, 2400), metavar=("S1", "S2", "S3"))
    parser.add_argument("--lr", type=float, nargs=3, default=(1e-3, 1e-3, 1e-3), metavar=("LR1", "LR2", "LR3"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--vision-steps", type=int, default=2000, help="stage 0 (vision pretraining) steps; 0 keeps a random tower"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--box-prompts", action="store_true", help="train with every region given as its filled bounding box"
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        help="take the tokenizer and the frozen vision tower from this checkpoint (no stage 0), and report it "
        "beside the new model on the same held-out scenes",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.monotonic()

    embed = minilm_embedder()
    miner = NegativeMiner(CATEGORIES, embed)
    train_dir, eval_dir = args.work / "data-train", args.work / "data-eval"
    files = shapes_world.generate(train_dir, args.train_images, seed=args.seed, overlap=0.5, miner=miner)
    held_out = shapes_world.generate(eval_dir, args.eval_images, seed=args.seed + 10_000, overlap=0.85)
    tokenizer = load_tokenizer(args.init_from) if args.init_from else train_tokenizer(corpus(files), vocab_size=512)

    model = OspreyForCausalLM(tiny_config(len(tokenizer) - 2))  # <mask>/<pos> are not in the table
    model.set_region_token_ids(*add_region_tokens(tokenizer))
    args.work.mkdir(parents=True, exist_ok=True)
    vision: dict[str, float | str] = {"steps": 0, "seconds": 0.0}
    if args.init_from:
        reference = json.loads((args.init_from / "eval_results.json").read_text())
        vision = {**reference.get("vision_pretrain", vision), "from": str(args.init_from)}
        shutil.copy(args.init_from / SHIPPED_CLIP_FILE, args.work / SHIPPED_CLIP_FILE)
    else:
        if args.vision_steps:
            vision = pretrain_vision_tower(
                model.vision_tower,
                model.config.vision.image_size,
                VisionPretrainConfig(args.vision_steps, seed=args.seed),
            )
        model.vision_tower.half()
        save_open_clip_file(model, args.work / SHIPPED_CLIP_FILE)  # the tower stages 1-3 freeze; fp16: small
    model.vision_tower.load_open_clip_file(args.work / SHIPPED_CLIP_FILE)
    model.vision_tower.float()

    images = train_dir / "images"
    stage_data = {
        1: load_caption_records(files["captions"], images),
        2: load_region_text_records(files["instances"], images, seed=args.seed),
        3: [r for kind in ("conversation", "short_form", "detail_description", "positive_negative")
            for r in load_osprey_records(files[kind], images)],
    }  # fmt: skip
    timings = {}
    for stage in (1, 2, 3):
        start = time.monotonic()
        path = run_stage(
            model, tokenizer, stage_data[stage], stage, args.work, args, args.steps[stage - 1], args.lr[stage - 1]
        )
        timings[stage] = time.monotonic() - start
        model = OspreyForCausalLM.from_pretrained(path)  # each stage starts from the previous one's checkpoint
        model.set_region_token_ids(*add_region_tokens(tokenizer))

    export_checkpoint(path, args.out, args.init_from)
    predictor = OspreyPredictor.from_pretrained(args.out)
    scores = evaluate(predictor, held_out["short_form"], eval_dir / "images", embed)
    print(markdown_table(scores))
    reference_scores = None
    if args.init_from:
        reference = OspreyPredictor.from_pretrained(args.init_from)
        reference_scores = evaluate(reference, held_out["short_form"], eval_dir / "images", embed)
        print(f"{args.init_from}:\n{markdown_table(reference_scores)}")
    total = time.monotonic() - started
    results = {
        "scores": {k: asdict(v) for k, v in scores.items()},
        "trained_with": "box" if args.box_prompts else "mask",
        "reference": None
        if reference_scores is None
        else {"checkpoint": str(args.init_from), "scores": {k: asdict(v) for k, v in reference_scores.items()}},
        "stage_seconds": timings,
        "vision_pretrain": vision,
        "total_seconds": total,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "torch": torch.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
        "command": "python -m training.train_tiny " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    (args.out / "eval_results.json").write_text(json.dumps(results, indent=2))
    write_model_card(args.out)
    print(f"total {total / 60:.1f} min; checkpoint and model card in {args.out}")


if __name__ == "__main__":
    main()
