"""``osprey-describe``: describe image regions given as mask PNGs, one line per region."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .checkpoint_io import CheckpointError
from .conversation import PROMPTS
from .embedded import DTYPES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="osprey-describe", description=__doc__)
    parser.add_argument("--model", required=True, type=Path, help="Osprey checkpoint folder (config.json + weights)")
    parser.add_argument("--clip", type=Path, help="open_clip_pytorch_model.bin (default: from config.json)")
    parser.add_argument("--image", required=True, type=Path)
    parser.add_argument("--mask", required=True, action="append", type=Path, help="binary mask PNG; repeat per region")
    parser.add_argument(
        "--prompt", default="short", help=f"preset ({', '.join(PROMPTS)}) or a question naming <region>"
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("-v", "--verbose", action="store_true", help="log checkpoint loading")
    return parser.parse_args(argv)


def _read_image(path: Path, what: str, mode: str) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (OSError, ValueError) as exc:  # not an image, truncated, unsupported mode
        raise ValueError(f"{what} {path} is not a readable image: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from .predictor import OspreyPredictor  # heavy imports after argument parsing

    try:
        image = _read_image(args.image, "image", "RGB")
        masks = [np.asarray(_read_image(path, "mask", "L")) for path in args.mask]
        predictor = OspreyPredictor.from_pretrained(args.model, args.clip, device=args.device, dtype=DTYPES[args.dtype])
        answers = predictor.describe(
            image, masks, prompt=args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature
        )
    except (OSError, ValueError, CheckpointError) as exc:  # CheckpointError is a ValueError; named for readers
        print(f"osprey-describe: error: {exc}", file=sys.stderr)
        return 2
    for path, answer in zip(args.mask, answers, strict=True):
        print(f"{path.name}: {answer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
