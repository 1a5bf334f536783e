"""``osprey-describe``: describe image regions, one line per region.

Regions come from mask PNGs (``--mask``), from SAM (``--point`` clicks, ``--box`` boxes), or from SAM's
automatic mask generation (``--everything``). Prompts: each ``--box`` is one object; with one box, the
clicks refine it; with clicks only, each positive click is one object and negative clicks (label 0) apply
to every object.
"""

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
from .sam.modeling import SAM_PRESETS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="osprey-describe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="Osprey checkpoint folder (default: the embedded tiny-shapes)")
    parser.add_argument("--clip", type=Path, help="open_clip_pytorch_model.bin (default: from config.json)")
    parser.add_argument("--image", required=True, type=Path)
    regions = parser.add_argument_group("regions (one kind: masks, or SAM prompts, or everything)")
    regions.add_argument("--mask", action="append", type=Path, default=[], help="binary mask PNG; repeat per region")
    regions.add_argument("--point", action="append", type=parse_point, default=[], help="click X,Y[,LABEL]; repeat")
    regions.add_argument("--box", action="append", type=parse_box, default=[], help="box X0,Y0,X1,Y1; repeat")
    regions.add_argument("--everything", action="store_true", help="every region SAM finds")
    parser.add_argument("--sam-preset", default="tiny", choices=sorted(SAM_PRESETS))
    parser.add_argument("--sam-checkpoint", type=Path, help="SAM weights (default: the embedded tiny SAM)")
    parser.add_argument("--max-regions", type=int, default=16, help="most regions --everything keeps")
    parser.add_argument("--save-masks", type=Path, help="write each region's mask as a PNG in this folder")
    parser.add_argument(
        "--prompt", default="short", help=f"preset ({', '.join(PROMPTS)}) or a question naming <region>"
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("-v", "--verbose", action="store_true", help="log checkpoint loading")
    args = parser.parse_args(argv)
    kinds = [bool(args.mask), bool(args.point or args.box), args.everything]
    if sum(kinds) != 1:
        parser.error("give regions one way: --mask files, or --point / --box prompts, or --everything")
    if len(args.box) > 1 and args.point:
        parser.error("with several --box, give no --point: each box is one object")
    return args


def _numbers(text: str, count: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count:
        raise argparse.ArgumentTypeError(f"{what} must be {' or '.join(str(c) for c in count)} numbers, got {text!r}")
    return values


def parse_point(text: str) -> tuple[float, float, int]:
    values = _numbers(text, (2, 3), "a point (X,Y[,LABEL])")
    label = int(values[2]) if len(values) == 3 else 1
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"a point's label is 1 (on the object) or 0 (not on it), got {text!r}")
    return values[0], values[1], label


def parse_box(text: str) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = _numbers(text, (4,), "a box (X0,Y0,X1,Y1)")
    return x0, y0, x1, y1


def _read_image(path: Path, what: str, mode: str) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (OSError, ValueError) as exc:  # not an image, truncated, unsupported mode
        raise ValueError(f"{what} {path} is not a readable image: {exc}") from exc


def sam_prompts(points: list[tuple[float, float, int]], boxes: list[tuple[float, float, float, float]]) -> list:
    """The objects the flags name (see the module docstring)."""
    from .sam.segmenter import Prompt

    negatives = [(x, y) for x, y, label in points if label == 0]
    if boxes:
        if len(boxes) == 1 and points:
            xy = np.array([(x, y) for x, y, _ in points], np.float32)
            return [Prompt(points=xy, labels=np.array([label for *_, label in points]), box=np.array(boxes[0]))]
        return [Prompt(box=np.array(box, np.float32)) for box in boxes]
    positives = [(x, y) for x, y, label in points if label == 1]
    if not positives:
        raise ValueError("only negative clicks (label 0): click on an object with label 1, or add a --box")
    return [
        Prompt(points=np.array([(x, y), *negatives], np.float32), labels=np.array([1] + [0] * len(negatives), np.int64))
        for x, y in positives
    ]


def find_regions(args: argparse.Namespace, image: Image.Image) -> tuple[list[np.ndarray], list[str]]:
    """The region masks and a name for each (file name, or what SAM was asked)."""
    if args.mask:
        return [np.asarray(_read_image(path, "mask", "L")) for path in args.mask], [p.name for p in args.mask]
    from .embedded import default_sam_checkpoint
    from .sam import AutomaticMaskConfig, AutomaticMaskGenerator, SamSegmenter

    if args.sam_checkpoint is None and args.sam_preset != "tiny":
        raise ValueError(f"--sam-preset {args.sam_preset} needs --sam-checkpoint (e.g. sam_vit_h_4b8939.pth)")
    checkpoint = args.sam_checkpoint or default_sam_checkpoint()
    segmenter = SamSegmenter.from_pretrained(args.sam_preset, checkpoint, device=args.device, dtype=DTYPES[args.dtype])
    rgb = np.asarray(image)
    if args.everything:
        config = AutomaticMaskConfig.recommended(segmenter.preset, max_masks=args.max_regions)
        found = AutomaticMaskGenerator(segmenter, config).generate(rgb)
        names = [f"region {i} (score {s:.2f})" for i, s in enumerate(found.scores)]
        return list(found.masks), names
    prompts = sam_prompts(args.point, args.box)
    result = segmenter.segment(rgb, prompts, multimask="best")
    names = [f"region {i} (score {s:.2f})" for i, s in enumerate(result.scores[:, 0])]
    return list(result.masks[:, 0]), names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from .embedded import default_checkpoint
    from .predictor import OspreyPredictor  # heavy imports after argument parsing

    try:
        image = _read_image(args.image, "image", "RGB")
        masks, names = find_regions(args, image)
        if args.save_masks is not None:
            args.save_masks.mkdir(parents=True, exist_ok=True)
            for i, mask in enumerate(masks):
                Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255).save(args.save_masks / f"region_{i}.png")
        if not masks:
            print("no region found")
            return 0
        # An empty SAM mask is reported as such; an empty mask file is the user's error (describe says so).
        keep = [i for i, mask in enumerate(masks) if args.mask or np.asarray(mask).any()]
        described = []
        if keep:
            model = args.model or default_checkpoint()
            predictor = OspreyPredictor.from_pretrained(model, args.clip, device=args.device, dtype=DTYPES[args.dtype])
            described = predictor.describe(
                image,
                [masks[i] for i in keep],
                prompt=args.prompt,
                max_new_tokens=args.max_new_tokens,
                temperature=args.temperature,
            )
    except (OSError, ValueError, CheckpointError) as exc:  # CheckpointError is a ValueError; named for readers
        print(f"osprey-describe: error: {exc}", file=sys.stderr)
        return 2
    answers = dict(zip(keep, described, strict=True))
    for i, name in enumerate(names):
        print(f"{name}: {answers.get(i, '(SAM found nothing for this prompt: empty mask)')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
