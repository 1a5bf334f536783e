"""Do camera-size images reach the node? Delivery of real-size frames over DDS, with the node's defaults.

For each DDS configuration (Fast DDS's own defaults, then the shipped ``config/fastdds_large_data.xml``)
this starts the real node (``osprey-perception``, shipped parameters: best-effort input, KEEP_LAST 5) and a
camera process that streams rgb8 images with 8 mono8 masks at 15 Hz, 640x480 and 1280x720, from a
reliable and from a best-effort (sensor-data) publisher. The camera process uses the same DDS configuration
as the node, as the README asks of a camera driver. The node's /diagnostics say what arrived.

    python bench/dds_delivery.py --name delivery-cpu            # both configurations, results in bench/results
    python bench/dds_delivery.py --camera ...                    # (internal) the camera process

Every process stays on localhost (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) in its own ROS domain.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
CASES = [(640, 480, "reliable"), (640, 480, "best_effort"), (1280, 720, "reliable"), (1280, 720, "best_effort")]
COUNTERS = ("images_received", "mask_sets_received", "mask_sets_unmatched", "frames_described")
FAST_DDS_DEFAULTS = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com"><profiles>
  <participant profile_name="fast_dds_defaults" is_default_profile="true"><rtps/></participant>
</profiles></dds>
"""


def camera(args: argparse.Namespace) -> None:
    """The camera process: streams each case, then reads the node's counters; prints one JSON line."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from osprey_interfaces.msg import RegionMasks
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rclpy.time import Time
    from sensor_msgs.msg import Image

    from osprey_ros.image_conversion import numpy_to_image

    rclpy.init()
    node = Node("delivery_camera")
    diagnostics: list[dict[str, str]] = []

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(": pipeline"):
                stamp = Time.from_msg(msg.header.stamp).nanoseconds
                diagnostics.append({"stamp": str(stamp), **{v.key: v.value for v in status.values}})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)

    def spin(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=max(0.0, min(0.01, end - time.monotonic())))

    def counters() -> dict[str, int]:
        since = node.get_clock().now().nanoseconds
        deadline = time.monotonic() + 10
        while not (diagnostics and int(diagnostics[-1]["stamp"]) > since) and time.monotonic() < deadline:
            spin(0.05)
        return {key: int(diagnostics[-1][key]) for key in COUNTERS}

    results = []
    rng = np.random.default_rng(0)
    for width, height, reliability in CASES:
        qos = (
            QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
            if reliability == "reliable"
            else qos_profile_sensor_data
        )
        image_pub = node.create_publisher(Image, "/camera/image_raw", qos)
        masks_pub = node.create_publisher(RegionMasks, "/camera/region_masks", qos)
        deadline = time.monotonic() + 60
        while (image_pub.get_subscription_count() == 0 or masks_pub.get_subscription_count() == 0) and (
            time.monotonic() < deadline
        ):
            spin(0.05)
        spin(2.0)  # the node's side of the match settles too: best-effort samples sent before that are lost
        image = numpy_to_image(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "rgb8")
        masks = RegionMasks()
        for i in range(8):
            mask = np.zeros((height, width), np.uint8)
            mask[i * height // 8 : (i + 1) * height // 8, : width // 2] = 255
            masks.masks.append(numpy_to_image(mask, "mono8"))
        before = counters()
        start = time.monotonic()
        for i in range(args.frames):
            stamp = node.get_clock().now().to_msg()
            image.header.stamp = masks.header.stamp = stamp
            image_pub.publish(image)
            masks_pub.publish(masks)
            spin(start + (i + 1) / args.rate - time.monotonic())
        spin(2.0)  # let the last frames land (and a late image be paired)
        after = counters()
        seen = {key: after[key] - before[key] for key in COUNTERS}
        results.append({"width": width, "height": height, "publisher": reliability, "sent": args.frames, **seen})
        node.destroy_publisher(image_pub)
        node.destroy_publisher(masks_pub)
        spin(0.5)
    print("RESULTS " + json.dumps(results), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def ros_env(domain: int, profile: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", FASTDDS_DEFAULT_PROFILES_FILE=profile
    )
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    return env


def measure(profile: str, domain: int, frames: int, rate: float, workdir: Path, parameters: dict[str, Any]) -> list:
    """Node and camera under one DDS profile; the per-case counts."""
    params_file = workdir / "params.yaml"
    params_file.write_text(yaml.safe_dump({"/**/osprey_perception": {"ros__parameters": parameters}}))
    env = ros_env(domain, profile)
    log = (workdir / "node.log").open("w")
    node = subprocess.Popen(
        [sys.executable, "-m", "osprey_ros.launcher", f"params_file:={params_file}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 120
        while "ready: model" not in (workdir / "node.log").read_text(errors="replace"):
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the node did not start:\n" + (workdir / "node.log").read_text(errors="replace"))
            time.sleep(0.1)
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--camera", "--frames", str(frames), "--rate", str(rate)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            cwd=ROOT,
        )
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULTS ")]
        if not lines:
            raise RuntimeError(f"the camera process failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return json.loads(lines[0][len("RESULTS ") :])
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(20)
        except subprocess.TimeoutExpired:
            node.kill()
        log.close()


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def shipped_profile() -> str:
    return str(ROOT / "config" / "fastdds_large_data.xml")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camera", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=150, help="frames per case (150 = 10 s at 15 Hz)")
    parser.add_argument("--rate", type=float, default=15.0)
    parser.add_argument("--domain", type=int, default=1 + os.getpid() % 100)
    parser.add_argument("--name", default="dds-delivery-cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.camera:
        camera(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        defaults = Path(tmp) / "fast_dds_defaults.xml"
        defaults.write_text(FAST_DDS_DEFAULTS)
        report: dict[str, Any] = {
            "machine": f"{cpu_name()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "frames_per_case": args.frames,
            "rate_hz": args.rate,
            "node_parameters": "shipped defaults (best_effort input, KEEP_LAST 5), embedded tiny model",
            "configurations": {},
        }
        for label, profile in (("fast-dds-defaults", str(defaults)), ("shipped-profile", shipped_profile())):
            workdir = Path(tmp) / label
            workdir.mkdir()
            report["configurations"][label] = measure(profile, args.domain, args.frames, args.rate, workdir, {})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# DDS delivery of camera-size frames ({report['date']})",
        "",
        f"Machine: {report['machine']}. {args.frames} frames per case at {args.rate:g} Hz, each an rgb8 image and a "
        "RegionMasks with 8 mono8 masks, node on its shipped parameters.",
        "",
        "| DDS configuration | image | publisher | images received | mask sets received | mask sets dropped |",
        "|---|---|---|---|---|---|",
    ]
    for label, cases in report["configurations"].items():
        for case in cases:
            lines.append(
                f"| {label} | {case['width']}x{case['height']} | {case['publisher']} | "
                f"{case['images_received']}/{case['sent']} | {case['mask_sets_received']}/{case['sent']} | "
                f"{case['mask_sets_unmatched']} |"
            )
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
