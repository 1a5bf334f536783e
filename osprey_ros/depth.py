"""Where a region is: its depth pixels back-projected into the camera's optical frame.

The depth image is aligned to the camera image (same size, same pixel grid), as RealSense's
``aligned_depth_to_color`` and ZED's ``depth`` topics are. REP 118 encodings: 16UC1 in millimetres (0 = no
return) or 32FC1 in metres (NaN / ±inf = no return). Positions follow REP 103's optical frame: x right,
y down, z forward, metres, in the image's ``frame_id``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from .image_conversion import ImageConversionError, image_to_numpy

DEPTH_SCALE = {"16UC1": 1e-3, "mono16": 1e-3, "32FC1": 1.0}  # to metres


def depth_to_metres(msg: Image) -> np.ndarray:
    """(H, W) float32 metres, NaN where the sensor gave no return (or a value no camera measures: ≤ 0)."""
    if msg.encoding not in DEPTH_SCALE:
        raise ImageConversionError(
            f"depth encoding {msg.encoding!r} not supported: send 16UC1 (millimetres) or 32FC1 (metres)"
        )
    try:
        values = image_to_numpy(msg)
    except ImageConversionError as exc:
        raise ImageConversionError(f"depth image: {exc}") from exc
    metres = values.astype(np.float32) * np.float32(DEPTH_SCALE[msg.encoding])
    metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    return metres


@dataclass(frozen=True)
class PinholeCamera:
    """The rectified camera's intrinsics (``CameraInfo.k``) and the image size they are for."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_camera_info(cls, msg: CameraInfo) -> PinholeCamera:
        fx, fy, cx, cy = float(msg.k[0]), float(msg.k[4]), float(msg.k[2]), float(msg.k[5])
        if fx <= 0 or fy <= 0:
            raise ValueError(f"camera_info has no intrinsics (fx={fx}, fy={fy}): is the camera calibrated?")
        return cls(fx, fy, cx, cy, int(msg.width), int(msg.height))

    def to_camera_info(self, header) -> CameraInfo:
        """A distortion-free CameraInfo (the synthetic camera's)."""
        k = [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]
        p = [self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        return CameraInfo(
            header=header, width=self.width, height=self.height, distortion_model="plumb_bob",
            d=[0.0] * 5, k=k, r=r, p=p,
        )  # fmt: skip


@dataclass(frozen=True)
class RegionPosition:
    """A region's place: the median of its back-projected depth pixels per axis, and their spread between
    two percentiles (robust to mask edges that bleed onto the background). ``valid_pixels`` counts the mask's
    pixels with a depth; below the minimum there is no position (``centroid`` is None)."""

    centroid: tuple[float, float, float] | None
    extent: tuple[float, float, float] | None
    valid_pixels: int


def region_position(
    depth: np.ndarray,
    mask: np.ndarray,
    camera: PinholeCamera,
    percentiles: tuple[float, float] = (5.0, 95.0),
    min_pixels: int = 20,
) -> RegionPosition:
    """``depth`` (H, W) metres with NaN holes and ``mask`` (H, W) bool, both on the camera's grid."""
    if depth.shape != mask.shape:
        raise ValueError(f"depth image {depth.shape[1]}x{depth.shape[0]} is not the mask's size")
    ys, xs = np.nonzero(mask & np.isfinite(depth))
    if len(xs) < max(min_pixels, 1):
        return RegionPosition(None, None, len(xs))
    z = depth[ys, xs].astype(np.float64)
    points = np.stack([(xs - camera.cx) * z / camera.fx, (ys - camera.cy) * z / camera.fy, z], axis=1)
    low, high = np.percentile(points, percentiles, axis=0)
    centre = np.median(points, axis=0)
    return RegionPosition(
        (float(centre[0]), float(centre[1]), float(centre[2])),
        (float(high[0] - low[0]), float(high[1] - low[1]), float(high[2] - low[2])),
        len(xs),
    )
