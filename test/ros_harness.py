"""Real-rclpy test harness: the node runs in its own process; the test talks to it over localhost DDS.

Every process gets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and the test group's own ROS_DOMAIN_ID.
Waiting is done with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from osprey_interfaces.msg import RegionDescriptionArray, RegionMasks
from osprey_interfaces.srv import DescribeRegions, FindRegion, ReasonSegment, SegmentAndDescribe
from rclpy.client import Client
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import Image


def domain_id(offset: int) -> int:
    """A domain per test group, spread by pid so concurrent runs on one machine do not meet (0..101 valid)."""
    return 1 + (os.getpid() * 7 + offset) % 100


def ros_env(domain: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


class NodeProcess:
    """``osprey-perception`` started the way a pip-only user starts it, with a params YAML."""

    def __init__(self, tmp: Path, domain: int, parameters: dict[str, Any], launch_args: dict[str, str]) -> None:
        params_file = tmp / "params.yaml"
        params_file.write_text(yaml.safe_dump({"/**/osprey_perception": {"ros__parameters": parameters}}))
        self.log_path = tmp / "node.log"
        args = [f"{k}:={v}" for k, v in {**launch_args, "params_file": str(params_file)}.items()]
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "osprey_ros.launcher", *args],
            env=ros_env(domain),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 30.0, since: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log()[since:])
            if match:
                return match.group(0)
            assert self.process.poll() is None, f"node exited:\n{self.log()}"
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r} within {timeout}s:\n{self.log()[-3000:]}")

    def rss_mb(self) -> float:
        """Resident memory of the node (the bootstrapper exec()s in place, so the pid is the node's)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Ctrl-C, as a user stops it. The node must exit 0 without a traceback, or the test fails."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        assert_clean_exit(self.process.returncode, self.log(), "the node")


def assert_clean_exit(returncode: int, output: str, what: str) -> None:
    assert "Traceback (most recent call last)" not in output, f"{what} printed a traceback:\n{output[-4000:]}"
    assert returncode == 0, f"{what} exited with {returncode}:\n{output[-4000:]}"


class RosTester:
    """The test's own node: publishes camera input, collects every output, calls the service."""

    def __init__(self, domain: int, image_topic: str, masks_topic: str, node_ns: str = "/osprey_perception") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = Node("tester", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, image_topic, qos)
        self.masks_pub = self.node.create_publisher(RegionMasks, masks_topic, qos)
        self.descriptions: list[RegionDescriptionArray] = []
        self.overlays: list[Image] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.region_masks: list[RegionMasks] = []  # what the node's SAM made (everything mode)
        self.reason_masks: list[RegionMasks] = []  # what LISA found for ~/reason_segment
        self.node.create_subscription(RegionDescriptionArray, f"{node_ns}/descriptions", self.descriptions.append, qos)
        self.node.create_subscription(Image, f"{node_ns}/overlay", self.overlays.append, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.node.create_subscription(RegionMasks, f"{node_ns}/region_masks", self.region_masks.append, qos)
        self.node.create_subscription(RegionMasks, f"{node_ns}/reason_masks", self.reason_masks.append, qos)
        self.client: Client[DescribeRegions.Request, DescribeRegions.Response] = self.node.create_client(
            DescribeRegions, f"{node_ns}/describe"
        )
        self.segment_client: Client[SegmentAndDescribe.Request, SegmentAndDescribe.Response] = self.node.create_client(
            SegmentAndDescribe, f"{node_ns}/segment_and_describe"
        )
        self.reason_client: Client[ReasonSegment.Request, ReasonSegment.Response] = self.node.create_client(
            ReasonSegment, f"{node_ns}/reason_segment"
        )
        self.find_client: Client[FindRegion.Request, FindRegion.Response] = self.node.create_client(
            FindRegion, f"{node_ns}/find_region"
        )

    def spin_for(self, done: Callable[[], bool], seconds: float) -> bool:
        """Spin until ``done()`` or ``seconds`` have passed; whether it is done (for waits that retry)."""
        deadline = time.monotonic() + seconds
        while not done():
            if time.monotonic() > deadline:
                return False
            self.executor.spin_once(timeout_sec=0.05)
        return True

    def spin_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        if not self.spin_for(done, timeout):
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def wait_for_node(self, timeout: float = 60.0, masks_topic: bool = True) -> None:
        """Until the node subscribes (to the mask topic too, unless it runs SAM on every frame) and serves."""
        self.spin_until(
            lambda: (
                self.image_pub.get_subscription_count() > 0
                and (self.masks_pub.get_subscription_count() > 0 or not masks_topic)
                and self.client.service_is_ready()
                and self.segment_client.service_is_ready()
                and self.reason_client.service_is_ready()
                and self.find_client.service_is_ready()
            ),
            timeout,
            "the node's subscriptions and services",
        )

    def call(self, request: Any, timeout: float = 60.0) -> Any:
        """``~/describe``, ``~/segment_and_describe``, ``~/reason_segment`` or ``~/find_region``, by the request's
        type."""
        client = {
            SegmentAndDescribe.Request: self.segment_client,
            ReasonSegment.Request: self.reason_client,
            FindRegion.Request: self.find_client,
        }.get(type(request), self.client)
        future = client.call_async(request)
        self.spin_until(future.done, timeout, "the service response")
        return future.result()

    def fresh_diagnostics(self, timeout: float = 10.0) -> None:
        """Wait for diagnostics the node built after this call (older ones may still be queued for us)."""
        since = self.node.get_clock().now().nanoseconds

        def fresh() -> bool:
            return bool(self.diagnostics) and Time.from_msg(self.diagnostics[-1].header.stamp).nanoseconds > since

        self.spin_until(fresh, timeout, "fresh diagnostics")

    def diagnostic(self, key: str) -> str:
        """The latest value of one pipeline diagnostic."""
        for array in reversed(self.diagnostics):
            for status in array.status:
                for value in status.values:
                    if value.key == key:
                        return value.value
        raise KeyError(key)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
