"""Image message conversion: every encoding round-trips, with padded rows and either byte order."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage

from osprey_ros.image_conversion import (
    ENCODINGS,
    ImageConversionError,
    compressed_to_rgb,
    image_to_numpy,
    image_to_rgb,
    mask_to_bool,
    numpy_to_image,
)


def _sample(encoding: str, height: int = 5, width: int = 7) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    rng = np.random.default_rng(1)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype == np.float32:
        return rng.normal(size=shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("pad", [0, 13])
def test_round_trip(encoding: str, pad: int) -> None:
    array = _sample(encoding)
    row = array.shape[1] * array.itemsize * (array.shape[2] if array.ndim == 3 else 1)
    msg = numpy_to_image(array, encoding, step=row + pad)
    assert msg.step == row + pad and len(msg.data) == msg.step * msg.height
    np.testing.assert_array_equal(image_to_numpy(msg), array)


def test_big_endian_mono16() -> None:
    array = np.array([[1, 258], [65535, 4096]], dtype=np.uint16)
    msg = numpy_to_image(array, "mono16")
    msg.data = array.astype(">u2").tobytes()
    msg.is_bigendian = 1
    np.testing.assert_array_equal(image_to_numpy(msg), array)


def test_bgr_and_rgba_to_rgb() -> None:
    rgb = _sample("rgb8")
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(rgb[:, :, ::-1], "bgr8")), rgb)
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(rgba, "rgba8")), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], rgba[:, :, 3:]], axis=2)
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(bgra, "bgra8")), rgb)
    mono = image_to_rgb(numpy_to_image(_sample("mono16"), "mono16"))
    assert mono.shape == (5, 7, 3) and mono.dtype == np.uint8


def test_bad_messages_are_clear_errors() -> None:
    msg = numpy_to_image(_sample("rgb8"), "rgb8")
    msg.encoding = "yuv422"
    with pytest.raises(ImageConversionError, match="unsupported image encoding 'yuv422'"):
        image_to_numpy(msg)
    msg = numpy_to_image(_sample("rgb8"), "rgb8")
    msg.data = msg.data[: len(msg.data) - 5]
    with pytest.raises(ImageConversionError, match="truncated image data"):
        image_to_numpy(msg)
    msg = numpy_to_image(_sample("rgb8"), "rgb8")
    msg.step = 3
    with pytest.raises(ImageConversionError, match="step 3 is smaller"):
        image_to_numpy(msg)
    with pytest.raises(ImageConversionError, match="masks must be mono8"):
        mask_to_bool(numpy_to_image(_sample("rgb8"), "rgb8"), 2)


def test_compressed() -> None:
    rgb = _sample("rgb8")
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format="PNG")
    msg = CompressedImage(format="png", data=buffer.getvalue())
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)
    with pytest.raises(ImageConversionError, match="cannot decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"garbage"))
