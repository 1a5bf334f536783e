"""Train LISA on the released data mix with the released recipe.

    python -m training.lisa.train --model LISA_DIR --clip CLIP_DIR --out runs/lisa \\
        --reason-seg data/reason_seg/ReasonSeg/train \\
        --refer data/refer_seg/refcoco --refer-images data/refer_seg/images/mscoco/images/train2014 \\
        --sem-seg ade20k:data/ade20k/images/training:data/ade20k/annotations/training:ade20k_classes.json:-1 \\
        --vqa data/llava_dataset/llava_instruct_150k.json --vqa-images data/coco/train2017 \\
        --steps 5000 --batch-size 2 --grad-accum 10 --deepspeed training/deepspeed/zero2.json

``--model`` is a LISA-layout folder (a released checkpoint, or one this project wrote) whose weights start
the run; ``--deepspeed`` runs ZeRO-2 (bf16) under the ``deepspeed`` launcher. A run killed midway resumes
from ``OUT/checkpoint-last`` when started again with the same arguments; ``OUT/metrics.csv`` logs each step.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from osprey_model.embedded import DTYPES
from osprey_model.lisa import LisaPredictor

from ..ranks import local_device, rank_seed
from .data import SemanticDataset, load_reason_seg, load_refer, load_semantic, load_vqa
from .mix import LisaSources, mixed_items
from .trainer import LisaTrainConfig, LisaTrainer


def semantic_source(spec: str) -> SemanticDataset:
    """``NAME:IMAGES:LABELS:CLASSES.json[:OFFSET]``; the classes file is a JSON list of names."""
    parts = spec.split(":")
    if len(parts) not in (4, 5):
        raise ValueError(f"--sem-seg {spec!r}: expected NAME:IMAGES:LABELS:CLASSES.json[:OFFSET]")
    names = json.loads(Path(parts[3]).read_text(encoding="utf-8"))
    offset = int(parts[4]) if len(parts) == 5 else 0
    return SemanticDataset(parts[0], Path(parts[1]), Path(parts[2]), tuple(names), label_offset=offset)


def load_sources(args: argparse.Namespace) -> LisaSources:
    sources = LisaSources()
    if args.reason_seg:
        sources.reason_seg = load_reason_seg(args.reason_seg)
    for folder in args.refer:
        sources.refer_seg += load_refer(folder, args.refer_images)
    for spec in args.sem_seg:
        source = semantic_source(spec)
        sources.sem_seg += [(source, record) for record in load_semantic(source)]
    if args.vqa:
        sources.vqa = load_vqa(args.vqa, args.vqa_images)
    return sources


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="LISA-layout folder the run starts from")
    parser.add_argument("--clip", default=None, help="CLIP tower folder (default: config's, beside the model)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--reason-seg", default="", help="ReasonSeg split folder")
    parser.add_argument("--refer", action="append", default=[], help="REFER dataset folder (repeatable)")
    parser.add_argument("--refer-images", default="", help="COCO train2014 images of the REFER datasets")
    parser.add_argument("--sem-seg", action="append", default=[], help="NAME:IMAGES:LABELS:CLASSES.json[:OFFSET]")
    parser.add_argument("--vqa", default="", help="llava_instruct_150k.json")
    parser.add_argument("--vqa-images", default="", help="its images (COCO train2017)")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--grad-accum", type=int, default=10)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--deepspeed", default="", help="DeepSpeed config (training/deepspeed/zero2.json)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # set by the launcher
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sources = load_sources(args)
    logging.getLogger(__name__).info("training data: %s", sources.sizes())
    device = local_device(args.device)  # under a launcher: this rank's GPU
    predictor = LisaPredictor.from_pretrained(args.model, args.clip, device=device, dtype=DTYPES[args.dtype])
    config = LisaTrainConfig(
        args.out,
        args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        save_every=args.save_every,
        deepspeed_config=args.deepspeed,
        seed=args.seed,
    )
    items = mixed_items(sources, rank_seed(args.seed))  # each rank its own draws; one process: the seed's
    trainer = LisaTrainer(predictor.model, predictor.tokenizer, predictor.image_processor, items, config)
    return trainer.train()


if __name__ == "__main__":
    main()
