"""The depth side of a frame: recent depth images and camera infos kept by stamp, and the regions' 3D
positions for the frame the model thread is describing.

Depth cameras publish depth and camera info with the colour image's stamp (aligned depth), so a frame's
partners are found by stamp, within ``slop`` as for the masks. Intrinsics rarely change: a frame whose own
camera info has not arrived (or was dropped) uses the newest one of the same size.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from .depth import PinholeCamera, RegionPosition, depth_to_metres, region_position


@dataclass
class DepthStats:
    depth_received: int = 0
    camera_info_received: int = 0
    frames_without_depth: int = 0  # described with no depth image within slop: no positions
    depth_errors: int = 0  # a depth image or camera info that could not be used (encoding, size, intrinsics)


class DepthInput:
    """Thread-safe: the executor adds, the model thread looks up."""

    def __init__(self, keep: int, slop: float, percentiles: Sequence[float], min_pixels: int) -> None:
        self.keep, self.slop_ns = keep, int(slop * 1e9)
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.min_pixels = min_pixels
        self.stats = DepthStats()
        self._depth: OrderedDict[int, Image] = OrderedDict()
        self._info: OrderedDict[int, CameraInfo] = OrderedDict()
        self._lock = threading.Lock()

    def add_depth(self, stamp: int, msg: Image) -> None:
        with self._lock:
            self.stats.depth_received += 1
            self._add(self._depth, stamp, msg)

    def add_camera_info(self, stamp: int, msg: CameraInfo) -> None:
        with self._lock:
            self.stats.camera_info_received += 1
            self._add(self._info, stamp, msg)

    def _add(self, store: OrderedDict, stamp: int, msg) -> None:
        store[stamp] = msg
        store.move_to_end(stamp)
        while len(store) > self.keep:
            store.popitem(last=False)

    def _nearest(self, store: OrderedDict, stamp: int):
        best = min(store, key=lambda s: abs(s - stamp), default=None)
        return None if best is None or abs(best - stamp) > self.slop_ns else store[best]

    def partners(self, stamp: int) -> tuple[Image | None, CameraInfo | None]:
        """The frame's depth image (None: none within slop) and camera info (its own, else the newest)."""
        with self._lock:
            depth = self._nearest(self._depth, stamp)
            info = self._nearest(self._info, stamp)
            if info is None and self._info:
                info = next(reversed(self._info.values()))
            return depth, info

    def positions(self, stamp: int, masks: list[np.ndarray]) -> list[RegionPosition] | None:
        """One position per mask; None when the frame has no usable depth (counted; ValueError says why when
        the depth image or camera info is there but wrong)."""
        depth_msg, info = self.partners(stamp)
        if depth_msg is None or info is None:
            self.stats.frames_without_depth += 1
            return None
        try:
            camera = PinholeCamera.from_camera_info(info)
            depth = depth_to_metres(depth_msg)
            height, width = masks[0].shape if masks else depth.shape
            if depth.shape != (height, width):
                raise ValueError(
                    f"depth image {depth.shape[1]}x{depth.shape[0]} is not the camera image's {width}x{height}: "
                    "subscribe to the depth aligned to the colour image"
                )
            if (camera.width, camera.height) not in ((width, height), (0, 0)):
                raise ValueError(
                    f"camera_info is for {camera.width}x{camera.height}, the image is {width}x{height}: "
                    "remap camera_info to the colour camera's"
                )
        except ValueError:
            self.stats.depth_errors += 1
            raise
        return [region_position(depth, mask, camera, self.percentiles, self.min_pixels) for mask in masks]
