"""What description reuse buys on a slowly moving scene: the node's frame path (decode, stable ids, Osprey
on the new or changed regions only) over the same frames with reuse on (the shipped parameters) and off
(``reuse_max_age: 0``, every region described every frame), in one run.

    python bench/reuse_bench.py --name reuse-cpu          # results in bench/results/reuse-cpu.{json,md}

Frames come from the synthetic camera's scene at 640x480 with its true masks (the topic mode); ``--speed``
scales the drift (1 = the demo camera's up to 4 px and 0.03 rad a frame). Figures: frame latency (p50,
mean), regions delivered per second, regions the model described per second, and the share reused.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import RESULTS, provenance, save_results

from osprey_model import FrameFeatures, OspreyPredictor
from osprey_model.embedded import default_checkpoint
from osprey_ros.parameters import SPECS
from osprey_ros.region_describer import RegionDescriber
from osprey_ros.region_tracker import RegionTracker, TrackerConfig, describe_tracked
from osprey_ros.synthetic_camera import ShapesScene

SHIPPED = TrackerConfig(
    match_iou=SPECS["track_iou"].default,
    reuse_iou=SPECS["reuse_iou"].default,
    reuse_max_age=SPECS["reuse_max_age"].default,
    max_missed=SPECS["track_max_missed"].default,
)


def run(describer: RegionDescriber, config: TrackerConfig, args: argparse.Namespace, speed: float) -> dict:
    scene = ShapesScene(640, 480, args.shapes, seed=args.seed, speed=speed)
    tracker = RegionTracker(config)
    latencies, regions = [], 0
    for _ in range(args.frames):
        image, masks, _, _ = scene.step()
        start = time.perf_counter()
        frame = FrameFeatures(image)
        regions += len(describe_tracked(tracker, partial(describer.describe, frame), masks, image.shape[:2]))
        latencies.append(time.perf_counter() - start)
    total = sum(latencies)
    return {
        "frames": args.frames,
        "regions": regions,
        "described": tracker.stats.described,
        "reused": tracker.stats.reused,
        "p50_ms": 1000 * statistics.median(latencies),
        "mean_ms": 1000 * total / len(latencies),
        "regions_per_s": regions / total,
        "described_per_s": tracker.stats.described / total,
    }


def markdown(result: dict) -> str:
    lines = [
        f"# Description reuse — {result['machine']}",
        "",
        f"{result['date']}; {result['model']} on cpu float32, {result['max_new_tokens']} new tokens, label plus "
        "attributes category and colour; "
        f"{result['frames']} frames of 640×480, {result['shapes']} shapes, true masks; shipped reuse "
        f"parameters {result['shipped']}.",
        "",
        "| scene speed | reuse | p50 ms | mean ms | regions / s delivered | described / s | reused | vs off |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for speed, runs in result["runs"].items():
        off = runs["off"]["mean_ms"]
        for name, r in runs.items():
            share = r["reused"] / max(r["regions"], 1)
            lines.append(
                f"| {speed} | {name} | {r['p50_ms']:.1f} | {r['mean_ms']:.1f} | {r['regions_per_s']:.1f} | "
                f"{r['described_per_s']:.1f} | {100 * share:.0f} % | {off / r['mean_ms']:.2f}× |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--shapes", type=int, default=6)
    parser.add_argument("--speeds", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="reuse-cpu")
    args = parser.parse_args(argv)
    model_dir = default_checkpoint()
    predictor = OspreyPredictor.from_pretrained(model_dir, device="cpu", dtype=torch.float32)
    attributes = tuple(SPECS["attributes"].default)  # the node's default typed attributes, asked as it does
    describer = RegionDescriber(predictor, "short", args.max_new_tokens, attributes)
    runs = {}
    for speed in args.speeds:
        runs[str(speed)] = {
            "on": run(describer, SHIPPED, args, speed),
            "off": run(describer, TrackerConfig(SHIPPED.match_iou, reuse_max_age=0), args, speed),
        }
    result = {
        **provenance(),
        "model": model_dir.name,
        "max_new_tokens": args.max_new_tokens,
        "frames": args.frames,
        "shapes": args.shapes,
        "shipped": f"reuse_iou {SHIPPED.reuse_iou}, reuse_max_age {SHIPPED.reuse_max_age}",
        "runs": runs,
    }
    save_results(result, markdown(result), args.out, args.name)
    return result


if __name__ == "__main__":
    main()
