"""Spinning an executor through rclpy's destroy-while-waiting race.

A lifecycle deactivate or cleanup destroys subscriptions from an executor thread while the spinning thread
builds its next wait set. rclpy enters each waitable (a subscription's QoS event handler among them) and then
enters it again to add it to the wait set; a destroy requested between the two raises ``InvalidHandle`` out of
``executor.spin()`` (ros2/rclpy#1206, #1284; still so in Kilted) and the node process ends. The destroyed
handler is gone from the node by the next turn, so that turn is simply spun again.
"""

from __future__ import annotations

from rclpy._rclpy_pybind11 import InvalidHandle
from rclpy.executors import Executor

MAX_FAILED_TURNS_IN_A_ROW = 200
"""A race clears within a few turns (a failed turn takes microseconds); a handle invalid this long is a real bug."""


def spin_until_shutdown(executor: Executor, turn_timeout: float = 1.0) -> None:
    """``executor.spin()``, but a turn that trips over a just-destroyed handle is spun again, not fatal."""
    failed_in_a_row = 0
    while executor.context.ok():
        try:
            executor.spin_once(timeout_sec=turn_timeout)
        except InvalidHandle:
            failed_in_a_row += 1
            if failed_in_a_row >= MAX_FAILED_TURNS_IN_A_ROW:
                raise
        else:
            failed_in_a_row = 0
