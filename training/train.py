"""Run one stage of the Osprey recipe: ``python -m training.train --stage N ...``.

Each stage starts from the previous stage's checkpoint (``--init``). Stage 1 starts from a preset, the
LLM weights (``--llm``, a Hugging Face Vicuna folder) and the CLIP file (``--clip``). Data are given as
``--data KIND FILE IMAGE_ROOT`` with KIND one of ``captions`` (stage 1), ``regions`` (stage 2, COCO
instances / RefCOCO) and ``osprey`` (stage 3, Osprey-724K files); repeat for several files.

GPUs (DeepSpeed ZeRO-2, bf16):

    deepspeed --num_gpus 8 -m training.train --stage 3 --init ckpt/stage2 --output-dir ckpt/stage3 \\
        --data osprey data/osprey_conversation.json coco/train2017 ... \\
        --batch-size 4 --grad-accum 4 --epochs 2 --gradient-checkpointing --dtype bfloat16 \\
        --deepspeed training/deepspeed/zero2.json

(several nodes: add ``--hostfile hostfile --num_nodes 2``). CPU: the same command with ``python -m``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase

from osprey_model import OspreyForCausalLM, get_preset
from osprey_model.embedded import parse_dtype
from osprey_model.tokenization import add_region_tokens, load_tokenizer

from .data.dataset import RegionDataset
from .data.records import load_caption_records, load_osprey_records, load_region_text_records
from .ranks import local_device
from .stages import get_stage
from .trainer import TrainConfig, Trainer

LOADERS = {"captions": load_caption_records, "regions": load_region_text_records, "osprey": load_osprey_records}


def build_model(args: argparse.Namespace) -> tuple[OspreyForCausalLM, PreTrainedTokenizerBase]:
    if args.init:
        return OspreyForCausalLM.from_pretrained(args.init, args.clip), load_tokenizer(args.init)
    if not (args.llm and args.clip):
        raise SystemExit("stage 1 from scratch needs --llm (a Vicuna folder) and --clip (open_clip_pytorch_model.bin)")
    model = OspreyForCausalLM(get_preset(args.preset))
    llm = LlamaForCausalLM.from_pretrained(args.llm, torch_dtype=torch.float32, local_files_only=True)
    model.language_model.load_state_dict(llm.state_dict())
    model.vision_tower.load_open_clip_file(args.clip)
    model.config.mm_vision_tower = str(args.clip)
    tokenizer = AutoTokenizer.from_pretrained(args.llm, use_fast=True, local_files_only=True)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.unk_token
    return model, tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", type=int, required=True, choices=(1, 2, 3))
    parser.add_argument("--init", type=Path, help="the previous stage's checkpoint folder")
    parser.add_argument("--preset", default="osprey-7b", help="model shape when starting from --llm")
    parser.add_argument("--llm", type=Path, help="Hugging Face LLaMA/Vicuna folder (stage 1 from scratch)")
    parser.add_argument("--clip", type=Path, help="open_clip_pytorch_model.bin")
    parser.add_argument("--data", nargs=3, action="append", required=True, metavar=("KIND", "FILE", "IMAGE_ROOT"))
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=float, default=0.0, help="0 = the stage's reference number")
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.0, help="0 = the stage's reference learning rate")
    parser.add_argument("--warmup-ratio", type=float, default=0.03)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--lora-rank", type=int, default=0, help="stage 3: LoRA on the LLM's q/v instead of full tuning"
    )
    parser.add_argument("--save-every", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--deepspeed", default="", help="DeepSpeed config JSON (ZeRO-2)")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    model, tokenizer = build_model(args)
    model.set_region_token_ids(*add_region_tokens(tokenizer))
    model.to(local_device(args.device), parse_dtype(args.dtype))  # under a launcher: this rank's GPU
    records = [r for kind, file, root in args.data for r in LOADERS[kind](Path(file), Path(root))]
    config = model.config
    image_tokens = (config.vision.image_size // model.vision_tower.strides[2]) ** 2
    dataset = RegionDataset(records, tokenizer, config.vision.image_size, image_tokens, args.max_length)
    train_config = TrainConfig(
        stage=args.stage, output_dir=str(args.output_dir), epochs=args.epochs or get_stage(args.stage).epochs,
        max_steps=args.max_steps, batch_size=args.batch_size, grad_accum=args.grad_accum, learning_rate=args.lr,
        warmup_ratio=args.warmup_ratio, gradient_checkpointing=args.gradient_checkpointing, lora_rank=args.lora_rank,
        save_every=args.save_every, seed=args.seed, num_workers=args.num_workers, deepspeed_config=args.deepspeed,
    )  # fmt: skip
    final = Trainer(model, dataset, train_config, tokenizer).train()
    print(f"stage {args.stage} checkpoint: {final}")


if __name__ == "__main__":
    main()
