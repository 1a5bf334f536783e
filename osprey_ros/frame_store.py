"""Recent camera frames and their encoder features, looked up by stamp for ~/describe."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

ImageT = TypeVar("ImageT")
FeaturesT = TypeVar("FeaturesT")


class FrameStore(Generic[ImageT, FeaturesT]):
    """The last ``size`` images (as received) and the features of those already encoded.

    Encoding happens at most once per frame: a question about a frame the pipeline already described
    reuses its features. Images come from the executor thread, features from the model thread; a lock
    guards the maps, never the encoder.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self.images: OrderedDict[int, ImageT] = OrderedDict()
        self.features: OrderedDict[int, FeaturesT] = OrderedDict()
        self.encoded = 0

    def add_image(self, stamp_ns: int, image: ImageT) -> None:
        with self._lock:
            self.images[stamp_ns] = image
            self.images.move_to_end(stamp_ns)
            while len(self.images) > self.size:
                self.images.popitem(last=False)

    def find(self, stamp_ns: int, slop_ns: int) -> int | None:
        """The stored stamp closest to ``stamp_ns`` within slop (0 = the latest); None if none."""
        stamps = self.stamps()
        if not stamps:
            return None
        if stamp_ns == 0:
            return max(stamps)
        best = min(stamps, key=lambda s: abs(s - stamp_ns))
        return best if abs(best - stamp_ns) <= slop_ns else None

    def features_for(self, stamp_ns: int, image: ImageT | None, encode: Callable[[ImageT], FeaturesT]) -> FeaturesT:
        """Cached features of a frame, else ``encode(image)`` (then cached). KeyError if neither exists."""
        with self._lock:
            if stamp_ns in self.features:
                self.features.move_to_end(stamp_ns)
                return self.features[stamp_ns]
            image = self.images.get(stamp_ns, image)
        if image is None:
            raise KeyError(f"frame {stamp_ns} is no longer cached")
        features = encode(image)
        self.encoded += 1
        self.put_features(stamp_ns, features)
        return features

    def put_features(self, stamp_ns: int, features: FeaturesT) -> None:
        with self._lock:
            self.features[stamp_ns] = features
            self.features.move_to_end(stamp_ns)
            while len(self.features) > self.size:
                self.features.popitem(last=False)

    def stamps(self) -> list[int]:
        with self._lock:
            return sorted(set(self.images) | set(self.features))
