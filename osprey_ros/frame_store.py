"""Recent camera frames and their encoder features, for ~/describe and for the pipeline.

Frames are keyed by arrival, not by stamp: an unstamped camera sends every image with stamp 0, and
several images may share a stamp, so a stamp alone must never select another image's features. Lookups
by stamp return the newest frame with that stamp.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

ImageT = TypeVar("ImageT")
FeaturesT = TypeVar("FeaturesT")


@dataclass
class _Frame(Generic[ImageT, FeaturesT]):
    stamp_ns: int
    image: ImageT
    features: FeaturesT | None = None


class FrameStore(Generic[ImageT, FeaturesT]):
    """The last ``size`` frames (image as received, features once encoded), each under its own key.

    Encoding happens at most once per frame: a question about a frame the pipeline already described
    reuses its features. Images come from the executor thread, features from the model thread; a lock
    guards the map, never the encoder.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._frames: OrderedDict[int, _Frame[ImageT, FeaturesT]] = OrderedDict()
        self._keys = itertools.count()
        self.encoded = 0

    def add_image(self, stamp_ns: int, image: ImageT) -> int:
        """Store a frame; returns its key."""
        key = next(self._keys)
        with self._lock:
            self._frames[key] = _Frame(stamp_ns, image)
            while len(self._frames) > self.size:
                self._frames.popitem(last=False)
        return key

    def find(self, stamp_ns: int, slop_ns: int) -> int | None:
        """The key of the frame whose stamp is closest to ``stamp_ns`` within slop (0 = the latest frame);
        among frames with equal stamps, the newest. None if none."""
        with self._lock:
            if not self._frames:
                return None
            if stamp_ns == 0:
                return next(reversed(self._frames))
            # Newest first, so that of equally close frames the newest wins.
            key, frame = min(reversed(self._frames.items()), key=lambda item: abs(item[1].stamp_ns - stamp_ns))
        return key if abs(frame.stamp_ns - stamp_ns) <= slop_ns else None

    def find_same(self, stamp_ns: int, image: ImageT, same: Callable[[ImageT, ImageT], bool]) -> int | None:
        """The key of a stored frame with this stamp and the same image (per ``same``), if any."""
        with self._lock:
            candidates = [(key, f.image) for key, f in self._frames.items() if f.stamp_ns == stamp_ns]
        return next((key for key, stored in reversed(candidates) if same(stored, image)), None)

    def stamp_of(self, key: int) -> int:
        with self._lock:
            return self._frames[key].stamp_ns

    def image_of(self, key: int) -> ImageT:
        with self._lock:
            return self._frames[key].image

    def features_for(self, key: int, encode: Callable[[ImageT], FeaturesT]) -> FeaturesT:
        """Cached features of a frame, else ``encode(image)`` (then cached). KeyError once it has left the store."""
        with self._lock:
            frame = self._frames.get(key)
            if frame is None:
                raise KeyError(f"frame {key} is no longer cached (cache_size={self.size})")
            if frame.features is not None:
                return frame.features
        features = encode(frame.image)
        self.encoded += 1
        frame.features = features
        return features

    def stamps(self) -> list[int]:
        with self._lock:
            return sorted(f.stamp_ns for f in self._frames.values())
