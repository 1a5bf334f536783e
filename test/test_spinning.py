"""The node's spin loop survives subscriptions destroyed by its own callbacks (lifecycle deactivate)."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import rclpy
from rclpy._rclpy_pybind11 import InvalidHandle
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from ros_harness import domain_id
from std_msgs.msg import String

from osprey_ros.spinning import MAX_FAILED_TURNS_IN_A_ROW, spin_until_shutdown

CHURNS = 2000


def test_spinning_goes_on_while_another_thread_destroys_and_creates_subscriptions() -> None:
    """Another thread destroys a subscription and makes a new one, as a lifecycle deactivate + activate running
    in an executor thread does, a couple of thousand times. Plain ``executor.spin()`` raises InvalidHandle within
    a few dozen (rclpy's race between building the wait set and the destroy); the node's loop must spin through
    it and keep delivering messages."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id(71))
    node = Node("churn", context=context)
    publisher = node.create_publisher(String, "chatter", 10)
    received: list[str] = []
    node.create_subscription(String, "chatter", lambda m: received.append(m.data), 10)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(node)
    failures: list[BaseException] = []

    def spin() -> None:
        try:
            spin_until_shutdown(executor, turn_timeout=0.1)
        except BaseException as exc:  # the test reports whatever ended the loop
            failures.append(exc)

    spinner = threading.Thread(target=spin, daemon=True)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # many thread switches, so the race comes up in every run (the node sets 5e-4)
    spinner.start()
    try:
        churned = 0
        subscription = node.create_subscription(String, "chatter", lambda m: None, 10)
        while churned < CHURNS and spinner.is_alive():
            node.destroy_subscription(subscription)
            subscription = node.create_subscription(String, "chatter", lambda m: None, 10)
            publisher.publish(String(data="x"))
            churned += 1
            time.sleep(0.0002)  # a turn for the spinner between destroys, as between a robot's transitions
        assert not failures, f"the spin loop ended after {churned} churns: {failures[0]!r}"
        wanted = len(received) + 5
        deadline = time.monotonic() + 30
        while len(received) < wanted and time.monotonic() < deadline:
            publisher.publish(String(data="after"))
            time.sleep(0.02)
        assert len(received) >= wanted, "messages stopped arriving after the churn"
    finally:
        sys.setswitchinterval(switch_interval)
        rclpy.shutdown(context=context)
        spinner.join(timeout=10)
        executor.shutdown()
        node.destroy_node()
    assert not spinner.is_alive(), "the spin loop did not end on shutdown"


def test_a_handle_that_stays_invalid_is_raised_not_spun_forever() -> None:
    """The retry is for a race, which clears on the next turn; an executor failing every turn must surface."""

    class AlwaysInvalid:
        context = type("Ok", (), {"ok": staticmethod(lambda: True)})()
        calls = 0

        def spin_once(self, timeout_sec: float | None = None) -> None:
            AlwaysInvalid.calls += 1
            raise InvalidHandle("cannot use Destroyable because destruction was requested")

    with pytest.raises(InvalidHandle):
        spin_until_shutdown(AlwaysInvalid())  # type: ignore[arg-type]
    assert AlwaysInvalid.calls == MAX_FAILED_TURNS_IN_A_ROW
