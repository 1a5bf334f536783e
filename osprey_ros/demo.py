"""``osprey-demo``: the node on the embedded default models, fed by the synthetic camera.

Prints the region descriptions as they arrive, with the camera's ground truth beside them, then exits after
``--frames`` frames. In the default ``everything`` mode the camera sends images only: the node's tiny SAM
finds the shapes, and each region is matched to the shape it covers by mask IoU. With ``--mask-source
topic`` the camera sends the true masks too (with the shapes' stable ids). The camera is an RGB-D one: each
region's 3D position from depth is printed beside the true card centre. Everything runs in one process over
real DDS, localhost only.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import rclpy
from osprey_interfaces.msg import RegionDescriptionArray, RegionMasks
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from .stamps import stamp_ns

if TYPE_CHECKING:
    from .synthetic_camera import SyntheticCamera

MATCH_IOU = 0.5
MASKS_WAIT_S = 2.0  # how long a description waits for its frame's masks (another topic) before printing


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="osprey-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="checkpoint folder (default: the embedded model)")
    parser.add_argument(
        "--mask-source",
        default="everything",
        choices=("everything", "topic"),
        help="everything: the node's SAM segments each frame; topic: the camera sends the true masks",
    )
    parser.add_argument("--frames", type=int, default=5, help="stop after this many described frames")
    parser.add_argument("--rate", type=float, default=2.0, help="camera frames per second")
    parser.add_argument("--prompt-mode", default="short", choices=("short", "category", "detailed"))
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return interruptible(lambda: run(parse_args(argv)))


def interruptible(demo: Callable[[], int]) -> int:
    """Run a demo; Ctrl-C before its pipeline ran (e.g. while the weights load) is a clean exit too."""
    try:
        return demo()
    except KeyboardInterrupt:
        rclpy.try_shutdown()
        return 0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


@dataclass
class Report:
    """Prints each described frame once its masks are in (everything mode) and keeps the tallies."""

    camera: SyntheticCamera
    everything: bool
    printed: int = 0
    shapes: int = 0
    matched: int = 0
    regions: int = 0
    descriptions: list[tuple[float, RegionDescriptionArray]] = field(default_factory=list)
    masks: dict[int, list[np.ndarray]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # callbacks run on the executor's threads

    def on_descriptions(self, msg: RegionDescriptionArray) -> None:
        with self.lock:
            self.descriptions.append((time.monotonic(), msg))

    def on_masks(self, msg: RegionMasks) -> None:
        from .image_conversion import mask_to_bool

        masks = [mask_to_bool(m, i) for i, m in enumerate(msg.masks)]
        with self.lock:
            self.masks[stamp_ns(msg.header.stamp)] = masks
            while len(self.masks) > 20:  # frames never described (dropped by the node) are forgotten
                self.masks.pop(next(iter(self.masks)))

    def flush(self) -> None:
        with self.lock:
            ready, waiting = [], []
            for arrived, msg in self.descriptions:
                stamp = stamp_ns(msg.header.stamp)
                if self.everything and stamp not in self.masks and time.monotonic() - arrived < MASKS_WAIT_S:
                    waiting.append((arrived, msg))
                else:
                    ready.append((msg, self.masks.pop(stamp, None)))
            self.descriptions = waiting
        for msg, masks in ready:
            self.print_frame(msg, masks)

    def print_frame(self, msg: RegionDescriptionArray, masks: list[np.ndarray] | None) -> None:
        stamp = stamp_ns(msg.header.stamp)
        truth = self.camera.truth.get(stamp)
        self.printed += 1
        print(
            f"frame {self.printed} stamp {stamp / 1e9:.3f} model {msg.model_name} {1000 * msg.inference_time:.0f} ms",
            flush=True,
        )
        if self.everything and truth is not None:
            print(f"  SAM found {len(msg.regions)} regions; the camera drew {len(truth.shapes)} shapes", flush=True)
            self.shapes += len(truth.shapes)
            self.regions += len(msg.regions)
        matched_shapes = set()
        for index, region in enumerate(msg.regions):
            actual, shape_index = "", -1
            if truth is not None and not self.everything and region.id in truth.ids:
                shape_index = truth.ids.index(region.id)
                shape = truth.shapes[shape_index]
                actual = f" (truth: {shape.colour} {shape.category})"
            elif truth is not None and masks is not None and index < len(masks):
                ious = [mask_iou(masks[index], true_mask) for true_mask in truth.masks]
                best = int(np.argmax(ious)) if ious else -1
                if best >= 0 and ious[best] >= MATCH_IOU:
                    shape_index, shape = best, truth.shapes[best]
                    actual = f" (truth: {shape.colour} {shape.category}, IoU {ious[best]:.2f})"
                    matched_shapes.add(best)
                else:
                    actual = f" (truth: no shape, best IoU {max(ious, default=0.0):.2f})"
            box = region.bbox
            typed = ", ".join(
                f"{name} {value!r}"
                for name in ("category", "colour", "material", "state")
                if (value := getattr(region, name))
            )
            print(
                f"  region {region.id}: {region.label!r} (confidence {region.label_confidence:.2f}){actual} box "
                f"{box.x_offset},{box.y_offset} {box.width}x{box.height} area {region.area}"
                + (" [reused]" if region.reused else ""),
                flush=True,
            )
            if typed:
                print(f"    {typed}", flush=True)
            if region.has_position:
                p = region.position
                where = f"    at x {p.x:+.2f} y {p.y:+.2f} z {p.z:.2f} m ({region.depth_pixels} depth pixels)"
                if truth is not None and shape_index >= 0:
                    where += " truth x {:+.2f} y {:+.2f} z {:.2f}".format(*truth.centres[shape_index])
                print(where, flush=True)
        self.matched += len(matched_shapes)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from .launcher import use_large_data_profile
    from .perception_node import create_node_or_exit, shutdown_quietly
    from .synthetic_camera import SyntheticCamera

    use_large_data_profile()
    rclpy.init(
        args=[
            "osprey-demo", "--ros-args", "-r", "image:=/camera/image_raw", "-r", "region_masks:=/camera/region_masks",
            "-r", "depth:=/camera/depth/image_raw", "-r", "camera_info:=/camera/camera_info",
        ]
    )  # fmt: skip
    everything = args.mask_source == "everything"
    perception = create_node_or_exit(
        parameter_overrides=[
            Parameter("model_dir", value=args.model),
            Parameter("prompt_mode", value=args.prompt_mode),
            Parameter("max_new_tokens", value=args.max_new_tokens),
            Parameter("mask_source", value=args.mask_source),
            Parameter("use_depth", value=True),
        ]
    )
    camera = SyntheticCamera(
        parameter_overrides=[Parameter("rate", value=args.rate), Parameter("publish_masks", value=not everything)]
    )
    printer = Node("demo_printer")
    report = Report(camera, everything)
    printer.create_subscription(RegionDescriptionArray, "/osprey_perception/descriptions", report.on_descriptions, 10)
    printer.create_subscription(RegionMasks, "/osprey_perception/region_masks", report.on_masks, 10)
    executor = MultiThreadedExecutor(num_threads=4)
    for node in (perception, camera, printer):
        executor.add_node(node)
    deadline = time.monotonic() + args.timeout
    try:
        while rclpy.ok() and report.printed < args.frames and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            report.flush()
        interrupted = not rclpy.ok()
    except (KeyboardInterrupt, ExternalShutdownException, RCLError):  # Ctrl-C (the signal shuts rclpy down)
        interrupted = True
    dropped = perception.pipeline.worker.frames_dropped if perception.pipeline else 0
    shutdown_quietly(executor, [perception, camera, printer])
    rclpy.try_shutdown()
    print(f"described {report.printed} frames; {dropped} camera frames dropped while the model was busy")
    if everything and report.shapes:
        print(
            f"SAM found {report.matched} of {report.shapes} shapes (mask IoU >= {MATCH_IOU}) "
            f"in {report.regions} regions"
        )
    if interrupted:
        return 0
    return 0 if report.printed >= args.frames else 1


if __name__ == "__main__":
    raise SystemExit(main())
