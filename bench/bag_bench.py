"""``osprey-bag`` throughput: a recorded RGB-D bag (640x480, true masks, depth, camera info) described
offline with description reuse on (the node's defaults) and off, in one run.

    python bench/bag_bench.py --name bag-cpu          # results in bench/results/bag-cpu.{json,md}
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import RESULTS, provenance, save_results

from osprey_ros.bag_tool import parse_args, run
from osprey_ros.synthetic_camera import record_bag


def markdown(result: dict) -> str:
    lines = [
        f"# osprey-bag throughput — {result['machine']}",
        "",
        f"{result['date']}; the embedded tiny-shapes model on cpu float32; a bag of {result['frames']} frames "
        f"of 640×480 ({result['shapes']} shapes drifting at speed {result['speed']}, true masks, 16UC1 depth, "
        f"camera info), {result['max_new_tokens']} new tokens, attributes category and colour.",
        "",
        "| reuse | frames / s | regions / s | described | reused | vs off |",
        "|---|---|---|---|---|---|",
    ]
    off = result["runs"]["off"]["frames_per_s"]
    for name, r in result["runs"].items():
        lines.append(
            f"| {name} | {r['frames_per_s']:.1f} | {r['regions_per_s']:.1f} | {r['described']} | {r['reused']} | "
            f"{r['frames_per_s'] / off:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--shapes", type=int, default=6)
    parser.add_argument("--speed", type=float, default=0.25)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="bag-cpu")
    args = parser.parse_args(argv)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "in"
        record_bag(bag, args.frames, shapes=args.shapes, speed=args.speed)
        for name, age in (("on", None), ("off", 0)):
            flags = [str(bag), str(Path(tmp) / f"out-{name}"), "--depth-topic", "/cam/depth"]
            flags += ["--camera-info-topic", "/cam/camera_info", "--max-new-tokens", str(args.max_new_tokens)]
            if age is not None:
                flags += ["--reuse-max-age", str(age)]
            stats, tracker = run(parse_args(flags))
            runs[name] = {
                "frames": stats.frames,
                "seconds": stats.seconds,
                "frames_per_s": stats.frames / stats.seconds,
                "regions_per_s": stats.regions / stats.seconds,
                "described": tracker.described,
                "reused": tracker.reused,
            }
    result = {
        **provenance(),
        "frames": args.frames,
        "shapes": args.shapes,
        "speed": args.speed,
        "max_new_tokens": args.max_new_tokens,
        "runs": runs,
    }
    save_results(result, markdown(result), args.out, args.name)
    return result


if __name__ == "__main__":
    main()
