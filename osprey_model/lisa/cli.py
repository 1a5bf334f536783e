"""``osprey-segment``: reasoning segmentation with LISA — an image and a query in, the answer printed and
one mask PNG per ``[SEG]`` written."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ..checkpoint_io import CheckpointError
from ..embedded import DTYPES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="osprey-segment", description=__doc__)
    parser.add_argument("--model", required=True, type=Path, help="LISA checkpoint folder (e.g. LISA-7B-v1)")
    parser.add_argument("--clip", type=Path, help="CLIP tower folder (default: config.json's, beside the model)")
    parser.add_argument("--image", required=True, type=Path)
    parser.add_argument("--query", required=True, help='e.g. "Where can I throw away this cup?"')
    parser.add_argument("--out", type=Path, default=Path(), help="folder for mask_0.png, mask_1.png, ...")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("-v", "--verbose", action="store_true", help="log checkpoint loading")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from ..cli import _read_image
    from .predictor import LisaPredictor  # heavy imports after argument parsing
    from .prompting import check_query

    try:
        check_query(args.query)
        image = _read_image(args.image, "image", "RGB")
        predictor = LisaPredictor.from_pretrained(args.model, args.clip, device=args.device, dtype=DTYPES[args.dtype])
        result = predictor.segment(image, args.query, max_new_tokens=args.max_new_tokens)
        args.out.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, mask in enumerate(result.masks):
            path = args.out / f"mask_{i}.png"
            Image.fromarray(mask.astype(np.uint8) * 255).save(path)
            paths.append(path)
    except (OSError, ValueError, CheckpointError) as exc:
        print(f"osprey-segment: error: {exc}", file=sys.stderr)
        return 2
    print(f"answer: {result.answer}")
    if not paths:
        print("no [SEG] in the answer: no mask")
    for path, mask, score in zip(paths, result.masks, result.scores, strict=True):
        print(f"{path}: {int(mask.sum())} pixels, score {score:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
