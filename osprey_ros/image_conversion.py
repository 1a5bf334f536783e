"""``sensor_msgs/Image`` ↔ numpy without cv_bridge (PyPI has no usable one).

Honours ``step`` (row padding) and ``is_bigendian``, and says clearly what is wrong with a bad message.
"""

from __future__ import annotations

import io
import sys
from typing import Literal

import numpy as np
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

# encoding → (numpy dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
MASK_ENCODINGS = ("mono8", "8UC1")


class ImageConversionError(ValueError):
    """A message that cannot be read as an image."""


def image_to_numpy(msg: Image) -> np.ndarray:
    """(H, W) or (H, W, C) array in the message's own channel order and dtype (native byte order)."""
    if msg.encoding not in ENCODINGS:
        raise ImageConversionError(f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(ENCODINGS)}")
    dtype, channels = ENCODINGS[msg.encoding]
    height, width = msg.height, msg.width
    if height == 0 or width == 0:
        raise ImageConversionError(f"image is empty ({width}x{height})")
    row_bytes = width * channels * dtype.itemsize
    if msg.step < row_bytes:
        raise ImageConversionError(
            f"step {msg.step} is smaller than a {msg.encoding} row of {width} pixels ({row_bytes})"
        )
    data = msg.data if isinstance(msg.data, bytes | bytearray | memoryview) else bytes(msg.data)
    if len(data) < msg.step * height:
        raise ImageConversionError(
            f"truncated image data: {len(data)} bytes, expected step*height = {msg.step}*{height} = {msg.step * height}"
        )
    rows = np.frombuffer(data, dtype=np.uint8, count=msg.step * height).reshape(height, msg.step)[:, :row_bytes]
    order: Literal[">", "<"] = ">" if msg.is_bigendian else "<"
    array = np.ascontiguousarray(rows).view(dtype.newbyteorder(order)).reshape(height, width, channels)
    array = array.astype(dtype, copy=False)  # to native byte order
    return array[:, :, 0] if channels == 1 else array


def numpy_to_image(array: np.ndarray, encoding: str, header=None, step: int | None = None) -> Image:
    """An Image message; ``step`` may exceed the row size to produce padded rows."""
    if encoding not in ENCODINGS:
        raise ImageConversionError(f"unsupported image encoding {encoding!r}")
    dtype, channels = ENCODINGS[encoding]
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] != channels:
        raise ImageConversionError(f"{encoding} needs {channels} channel(s), got an array of shape {array.shape}")
    height, width = array.shape[:2]
    row_bytes = width * channels * dtype.itemsize
    step = row_bytes if step is None else step
    if step < row_bytes:
        raise ImageConversionError(f"step {step} is smaller than the row size {row_bytes}")
    rows = np.zeros((height, step), np.uint8)
    rows[:, :row_bytes] = (
        np.ascontiguousarray(array.astype(dtype, copy=False)).view(np.uint8).reshape(height, row_bytes)
    )
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, step
    msg.is_bigendian = int(sys.byteorder == "big")
    msg.data = rows.tobytes()
    return msg


def image_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB for the model, from any supported encoding (16-bit and float are rescaled)."""
    array = image_to_numpy(msg)
    encoding = msg.encoding
    if encoding in ("bgr8", "bgra8"):
        array = array[:, :, 2::-1]
    elif encoding in ("rgba8",):
        array = array[:, :, :3]
    elif array.ndim == 2:
        if array.dtype != np.uint8:
            array = _to_uint8(array)
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Depth-like single-channel data stretched to 0..255 so it can be looked at."""
    finite = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min()), float(finite.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return ((finite - low) * scale).astype(np.uint8)


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    try:
        with PILImage.open(io.BytesIO(bytes(msg.data))) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise ImageConversionError(f"cannot decode compressed image (format {msg.format!r}): {exc}") from exc


def mask_to_bool(msg: Image, index: int) -> np.ndarray:
    """A mono8 region mask as a bool array (non-zero = inside)."""
    if msg.encoding not in MASK_ENCODINGS:
        raise ImageConversionError(f"mask {index} has encoding {msg.encoding!r}; masks must be mono8")
    try:
        return image_to_numpy(msg) > 0
    except ImageConversionError as exc:
        raise ImageConversionError(f"mask {index}: {exc}") from exc
