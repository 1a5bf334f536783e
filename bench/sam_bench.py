"""SAM in the loop: encoder per backend, prompt decoding, "everything" per frame, and the whole frame.

For each SAM preset (the shipped ``tiny``, and the released ``vit_b`` / ``vit_h`` shapes with random
weights), on one machine in one run:

- the image encoder per backend (torch, compile, onnxruntime, tensorrt; unavailable ones say why);
- decoding prompts on an encoded frame: one click, one box, 16 clicks in one batch;
- automatic mask generation per 640×480 frame: ours (batched, filtered at low resolution) against
  segment-anything's ``SamAutomaticMaskGenerator`` with the same grid and filters;
- the everything mode's frame latency: decode the image, SAM's embedding, everything, then Osprey
  (``tiny-shapes``, the embedded default) describing every region, batched.

Random weights find no confident masks, so their generator runs with the filters at 0 (the decoder work
is the same; NMS then keeps few masks). Ratios are within the run. Results go to bench/results/.

    python bench/sam_bench.py                                          # CPU: tiny and vit_b
    python bench/sam_bench.py --presets vit_h --device cuda --dtype bfloat16 --name sam-h200   # GPU
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import bench_backends, provenance, timed

from osprey_model import FrameFeatures, OspreyPredictor
from osprey_model.embedded import default_checkpoint, default_sam_checkpoint, parse_dtype
from osprey_model.sam import (
    AutomaticMaskConfig,
    AutomaticMaskGenerator,
    SamImageEncoder,
    SamSegmenter,
    build_sam,
    get_sam_preset,
)
from osprey_model.sam.modeling import serve_sam
from osprey_model.sam.segmenter import Prompt
from osprey_model.shapes import random_shapes, render

RESULTS = Path(__file__).resolve().parent / "results"


def median_ms(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    return 1000 * statistics.median(timed(fn, device) for _ in range(repeats))


def load(preset: str, device: torch.device, dtype: torch.dtype) -> SamSegmenter:
    if preset == "tiny":
        return SamSegmenter.from_pretrained("tiny", default_sam_checkpoint(), device=device, dtype=dtype)
    torch.manual_seed(0)
    with torch.device(device):
        sam = build_sam(get_sam_preset(preset))
    return SamSegmenter(serve_sam(sam, get_sam_preset(preset), device=device, dtype=dtype))


def test_frame(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image, _ = render(random_shapes(rng, 640, 480, 4, overlap=0.3), 640, 480, rng)
    return image


def bench_prompts(segmenter: SamSegmenter, image: np.ndarray, device: torch.device, repeats: int) -> dict[str, float]:
    frame = segmenter.encode(image)
    clicks = np.random.default_rng(1).uniform((0, 0), (639, 479), (16, 2)).astype(np.float32)
    cases = {
        "one_click_ms": [Prompt(points=clicks[:1], labels=np.ones(1, np.int64))],
        "one_box_ms": [Prompt(box=np.array([100, 80, 300, 260], np.float32))],
        "sixteen_clicks_ms": [Prompt(points=c[None], labels=np.ones(1, np.int64)) for c in clicks],
    }
    out = {
        name: median_ms(lambda prompts=prompts: segmenter.segment(frame, prompts), device, repeats)
        for name, prompts in cases.items()
    }
    print("  prompts: " + ", ".join(f"{k} {v:.1f}" for k, v in out.items()), flush=True)
    return out


def bench_everything(
    segmenter: SamSegmenter, image: np.ndarray, config: AutomaticMaskConfig, device: torch.device, repeats: int
) -> dict[str, float]:
    from segment_anything import SamAutomaticMaskGenerator

    frame = segmenter.encode(image)
    ours = AutomaticMaskGenerator(segmenter, config)
    found = ours.generate(frame)
    ours_ms = median_ms(lambda: ours.generate(frame), device, repeats)
    reference = SamAutomaticMaskGenerator(
        segmenter.sam,
        points_per_side=config.points_per_side,
        points_per_batch=config.points_per_batch,
        pred_iou_thresh=config.pred_iou_thresh,
        stability_score_thresh=config.stability_score_thresh,
        box_nms_thresh=config.nms_thresh,
    )
    predictor = reference.predictor

    def cached_embedding(_image: np.ndarray) -> None:
        """The package's generator encodes the image itself: give it ours, so only mask generation counts."""
        predictor.features, predictor.is_image_set = frame.embedding, True
        predictor.original_size, predictor.input_size = frame.image_hw, frame.input_hw

    predictor.set_image = cached_embedding  # type: ignore[method-assign]
    # Its prompt encoder output (fp32 here) meets a bf16 decoder: autocast, as a user of the package would.
    dtype = segmenter.decoder_dtype
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with torch.inference_mode(), autocast:
        reference_masks = reference.generate(image)
        reference_ms = 1000 * statistics.median(
            timed(lambda: reference.generate(image), device) for _ in range(max(1, repeats // 2))
        )
    out = {
        "ours_ms": ours_ms,
        "segment_anything_ms": reference_ms,
        "speedup": reference_ms / ours_ms,
        "regions_ours": len(found),
        "regions_segment_anything": len(reference_masks),
    }
    print(f"  everything: ours {ours_ms:.0f} ms vs segment-anything {reference_ms:.0f} ms", flush=True)
    return out


def bench_frame(
    segmenter: SamSegmenter,
    predictor: OspreyPredictor,
    image: np.ndarray,
    config: AutomaticMaskConfig,
    device: torch.device,
    repeats: int,
) -> dict[str, float]:
    generator = AutomaticMaskGenerator(segmenter, config)
    regions = 0

    def one_frame() -> None:
        nonlocal regions
        frame = FrameFeatures(image)
        masks = list(generator.generate(frame).masks)
        regions = len(masks)
        if masks:
            predictor.prefix_cache._entries.clear()  # a new frame: no prefix reuse
            predictor.describe(frame, masks, max_new_tokens=8)

    out = {"frame_ms": median_ms(one_frame, device, repeats), "regions": regions}
    print(f"  everything-mode frame: {out['frame_ms']:.0f} ms for {regions} regions", flush=True)
    return out


def markdown(result: dict) -> str:
    lines = [
        f"# SAM benchmark — {result['machine']}",
        "",
        f"{result['date']}; {result['device']} {result['dtype']}, torch {result['torch']}; 640×480 frames of the "
        f"shapes world; {result['repeats']} repeats (median). Random-weight presets run the generator with its "
        "filters at 0 (same decoder work). segment-anything's generator gets the same grid, batch, predicted-IoU, "
        "stability and NMS settings and our embedding; it has no area filter (ours drops masks under 0.05 % or "
        "over 95 % of the image), so region counts may differ. The frame latency is decode + SAM embedding + "
        "everything + Osprey `tiny-shapes` describing every region (8 new tokens).",
        "",
    ]
    for preset, r in result["presets"].items():
        lines += [f"## `{preset}`{' (shipped weights)' if preset == 'tiny' else ' (random weights)'}", ""]
        lines += ["| encoder backend | p50 ms | vs torch |", "|---|---|---|"]
        base = r["encoders"].get("torch", {}).get("p50_ms")
        for name, e in r["encoders"].items():
            if e["available"]:
                lines.append(f"| {name} | {e['p50_ms']:.1f} | {base / e['p50_ms']:.2f}× |")
            else:
                lines.append(f"| {name} | n/a ({e['why']}) | |")
        p, e, f = r["prompts"], r["everything"], r["frame"]
        lines += [
            "",
            f"Prompt decoding on an encoded frame: one click {p['one_click_ms']:.1f} ms, one box "
            f"{p['one_box_ms']:.1f} ms, 16 clicks in one batch {p['sixteen_clicks_ms']:.1f} ms.",
            "",
            f"Everything ({r['points_per_side']}² points): ours {e['ours_ms']:.0f} ms ({e['regions_ours']} regions), "
            f"segment-anything's generator {e['segment_anything_ms']:.0f} ms ({e['regions_segment_anything']} "
            f"regions): **{e['speedup']:.1f}×**.",
            "",
            f"Everything-mode frame, end to end: **{f['frame_ms']:.0f} ms** ({f['regions']} regions described).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "vit_b"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="", help="file name stem (default: sam-<device>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device, dtype = torch.device(args.device), parse_dtype(args.dtype)
    predictor = OspreyPredictor.from_pretrained(default_checkpoint(), device=device)
    image = test_frame()
    result: dict = {
        **provenance(),
        "device": args.device,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "repeats": args.repeats,
        "presets": {},
    }
    for preset in args.presets:
        print(f"{preset}:", flush=True)
        start = time.perf_counter()
        segmenter = load(preset, device, dtype)
        shipped = preset == "tiny"
        config = (
            AutomaticMaskConfig.recommended(get_sam_preset("tiny"), points_per_side=args.points_per_side)
            if shipped
            else AutomaticMaskConfig(
                points_per_side=args.points_per_side, pred_iou_thresh=0.0, stability_score_thresh=0.0
            )
        )
        result["presets"][preset] = {
            "load_s": time.perf_counter() - start,
            "points_per_side": args.points_per_side,
            "encoders": bench_backends(
                SamImageEncoder(segmenter.sam.image_encoder), device, args.repeats, args.out / ".encoder-cache"
            ),
            "prompts": bench_prompts(segmenter, image, device, args.repeats),
            "everything": bench_everything(segmenter, image, config, device, args.repeats),
            "frame": bench_frame(segmenter, predictor, image, config, device, args.repeats),
        }
        del segmenter
    name = args.name or f"sam-{args.device}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(result))
    print(f"wrote {args.out / name}.json and .md")
    return result


if __name__ == "__main__":
    main()
