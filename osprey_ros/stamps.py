"""ROS time stamps as integer nanoseconds, the key the pairing and the frame cache use."""

from __future__ import annotations

from builtin_interfaces.msg import Time


def stamp_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def to_stamp(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
