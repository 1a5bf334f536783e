"""``osprey-demo``: the node on the embedded default model, fed by the synthetic camera.

Prints the region descriptions as they arrive (with the camera's ground truth beside them), then exits
after ``--frames`` frames. Everything runs in one process over real DDS, on localhost only.
"""

from __future__ import annotations

import argparse
import os
import time

import rclpy
from osprey_interfaces.msg import RegionDescriptionArray
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="osprey-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="checkpoint folder (default: the embedded model)")
    parser.add_argument("--frames", type=int, default=5, help="stop after this many described frames")
    parser.add_argument("--rate", type=float, default=2.0, help="camera frames per second")
    parser.add_argument("--prompt-mode", default="short", choices=("short", "category", "detailed"))
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except KeyboardInterrupt:  # Ctrl-C before the pipeline ran (e.g. while the weights load)
        rclpy.try_shutdown()
        return 0


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from .launcher import use_large_data_profile
    from .perception_node import create_node_or_exit, shutdown_quietly
    from .synthetic_camera import SyntheticCamera

    use_large_data_profile()
    rclpy.init(
        args=["osprey-demo", "--ros-args", "-r", "image:=/camera/image_raw", "-r", "region_masks:=/camera/region_masks"]
    )
    perception = create_node_or_exit(
        parameter_overrides=[
            Parameter("model_dir", value=args.model),
            Parameter("prompt_mode", value=args.prompt_mode),
            Parameter("max_new_tokens", value=args.max_new_tokens),
        ]
    )
    camera = SyntheticCamera(parameter_overrides=[Parameter("rate", value=args.rate)])
    printer = Node("demo_printer")
    received: list[RegionDescriptionArray] = []

    def show(msg: RegionDescriptionArray) -> None:
        received.append(msg)
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        truth = camera.truth.get(stamp, [])
        print(
            f"frame {len(received)} stamp {stamp / 1e9:.3f} model {msg.model_name} {1000 * msg.inference_time:.0f} ms",
            flush=True,
        )
        for region in msg.regions:
            shape = truth[region.id] if region.id < len(truth) else None
            actual = f" (truth: {shape.colour} {shape.category})" if shape else ""
            box = region.bbox
            print(
                f"  region {region.id}: {region.label!r}{actual} box {box.x_offset},{box.y_offset} "
                f"{box.width}x{box.height} area {region.area}",
                flush=True,
            )

    printer.create_subscription(RegionDescriptionArray, "/osprey_perception/descriptions", show, 10)
    executor = MultiThreadedExecutor(num_threads=4)
    for node in (perception, camera, printer):
        executor.add_node(node)
    deadline = time.monotonic() + args.timeout
    try:
        while rclpy.ok() and len(received) < args.frames and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        interrupted = not rclpy.ok()
    except (KeyboardInterrupt, ExternalShutdownException, RCLError):  # Ctrl-C (the signal shuts rclpy down)
        interrupted = True
    dropped = perception.pipeline.worker.frames_dropped if perception.pipeline else 0
    shutdown_quietly(executor, [perception, camera, printer])
    rclpy.try_shutdown()
    print(f"described {len(received)} frames; {dropped} camera frames dropped while the model was busy")
    if interrupted:
        return 0
    return 0 if len(received) >= args.frames else 1


if __name__ == "__main__":
    raise SystemExit(main())
