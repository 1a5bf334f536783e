"""One camera frame's decoded pixels and every encoder output computed from them, each at most once.

Osprey's vision features and SAM's image embedding of the same frame live side by side under the one key
the node's frame store gives the frame, so a frame that SAM segmented and Osprey then described, or that a
service asks about later, is never decoded or encoded twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import numpy as np

from .image_processing import ImageInput, to_rgb_array

T = TypeVar("T")


class FrameFeatures:
    """The frame's RGB pixels and, by name (``osprey``, ``sam``, ...), the encoders' outputs for them."""

    def __init__(self, image: ImageInput) -> None:
        self.rgb: np.ndarray = to_rgb_array(image)
        self._encoded: dict[str, Any] = {}

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]

    def get(self, name: str, encode: Callable[[np.ndarray], T]) -> T:
        """``name``'s output, computing it with ``encode(rgb)`` on first use. Not thread-safe: one model
        thread encodes."""
        if name not in self._encoded:
            self._encoded[name] = encode(self.rgb)
        return cast(T, self._encoded[name])

    def encoded(self) -> list[str]:
        return list(self._encoded)


class EncoderRuns:
    """Counts the encoder outputs computed during a block (``with runs.counting(frame): ...``), whatever the
    encoder: how a caller tells a cached frame (0 runs) from a fresh one."""

    def __init__(self) -> None:
        self.total = 0

    @contextmanager
    def counting(self, frame: FrameFeatures) -> Iterator[None]:
        before = len(frame.encoded())
        try:
            yield
        finally:
            self.total += len(frame.encoded()) - before
