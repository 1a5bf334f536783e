"""``osprey-reason-demo``: the node with a LISA checkpoint answers ``~/reason_segment`` on the synthetic camera.

For a few camera frames, asks queries that never name the shape ("Which shape is the colour of a clear sky?",
"Segment the shape left of the red star."), built from the camera's ground truth so that exactly one answer
is right; prints LISA's answer, each mask's IoU with the meant shape and Osprey's description of the mask.
Everything runs in one process over real DDS, localhost only.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import rclpy
from osprey_interfaces.srv import ReasonSegment
from rclpy._rclpy_pybind11 import RCLError
from rclpy.client import Client
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from .demo import interruptible, mask_iou
from .image_conversion import mask_to_bool
from .stamps import stamp_ns


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="osprey-reason-demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lisa", type=Path, default=None,
        help="LISA checkpoint folder, its CLIP folder beside it (default: the embedded tiny LISA)",
    )  # fmt: skip
    parser.add_argument("--frames", type=int, default=3, help="camera frames to ask about")
    parser.add_argument("--queries", type=int, default=3, help="queries per frame")
    parser.add_argument("--seed", type=int, default=1, help="the camera's scene and the queries' phrasing")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return interruptible(lambda: run(parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from osprey_model.embedded import default_lisa_checkpoint
    from osprey_model.shapes_queries import candidate_queries

    from .launcher import use_large_data_profile
    from .perception_node import create_node_or_exit, shutdown_quietly
    from .synthetic_camera import SyntheticCamera

    use_large_data_profile()
    rclpy.init(args=["osprey-reason-demo", "--ros-args", "-r", "image:=/camera/image_raw"])
    perception = create_node_or_exit(
        parameter_overrides=[
            Parameter("lisa_model_dir", value=str(args.lisa or default_lisa_checkpoint())),
            Parameter("mask_source", value="topic"),  # the camera's masks: the node's worker stays light
        ]
    )
    camera = SyntheticCamera(
        parameter_overrides=[
            Parameter("rate", value=1.0),
            Parameter("seed", value=args.seed),
            Parameter("publish_masks", value=False),
        ]
    )
    asker = Node("reason_demo")
    client: Client = asker.create_client(ReasonSegment, "/osprey_perception/reason_segment")
    executor = MultiThreadedExecutor(num_threads=4)
    for node in (perception, camera, asker):
        executor.add_node(node)
    rng = np.random.default_rng(args.seed)
    deadline = time.monotonic() + args.timeout
    ious: list[float] = []
    asked_stamps: set[int] = set()
    interrupted = False

    def spin_until(done) -> bool:
        while rclpy.ok() and not done() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        return done()

    try:
        if not spin_until(lambda: client.service_is_ready() and len(camera.truth) >= 2):
            print("the node or the camera did not come up in time")
            return 1
        for frame in range(args.frames):
            spin_until(lambda: any(s not in asked_stamps for s in list(camera.truth)[:-1]))
            stamp = next(s for s in reversed(list(camera.truth)[:-1]) if s not in asked_stamps)  # cached by now
            asked_stamps.update(camera.truth)
            truth = camera.truth[stamp]
            queries = candidate_queries(truth.shapes, truth.masks, rng, held_out=bool(frame % 2))
            chosen = [queries[i] for i in rng.permutation(len(queries))[: args.queries]]
            print(f"frame {frame + 1} stamp {stamp / 1e9:.3f}: {len(truth.shapes)} shapes", flush=True)
            for query in chosen:
                request = ReasonSegment.Request(query=query.query, describe=True)
                request.stamp.sec, request.stamp.nanosec = divmod(stamp, 1_000_000_000)
                future = client.call_async(request)
                if not spin_until(future.done):
                    print("  no answer in time")
                    return 1
                response = future.result()
                assert response is not None  # done, and a service call's future holds its response
                meant = " and ".join(f"{truth.shapes[i].colour} {truth.shapes[i].category}" for i in query.targets)
                print(f"  Q: {query.query}\n     meant: {meant}", flush=True)
                if not response.success:
                    print(f"     error: {response.message}", flush=True)
                    continue
                assert stamp_ns(response.stamp) == stamp
                print(f"     LISA: {response.answer!r}" + (f" ({response.message})" if response.message else ""))
                for k, target in enumerate(query.targets):
                    mask = mask_to_bool(response.masks[k], k) if k < len(response.masks) else None
                    iou = mask_iou(mask, truth.masks[target]) if mask is not None else 0.0
                    ious.append(iou)
                    said = response.descriptions[k] if mask is not None else "(no mask)"
                    print(f"     mask {k}: IoU {iou:.2f} with the {truth.shapes[target].colour} "
                          f"{truth.shapes[target].category}; Osprey: {said!r}", flush=True)  # fmt: skip
    except (KeyboardInterrupt, ExternalShutdownException, RCLError):  # Ctrl-C (the signal shuts rclpy down)
        interrupted = True
    finally:
        shutdown_quietly(executor, [perception, camera, asker])
        rclpy.try_shutdown()
    if ious:
        hits = sum(iou >= 0.5 for iou in ious)
        print(f"{len(ious)} meant shapes: mean IoU {np.mean(ious):.2f}; {hits} found (IoU >= 0.5)")
    return 0 if interrupted or ious else 1


if __name__ == "__main__":
    raise SystemExit(main())
