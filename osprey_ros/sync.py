"""Approximate-time pairing of camera images with region masks (message_filters is not on PyPI).

Images and mask sets are matched by header stamp within ``slop``. Both queues are bounded. A mask set
waits for its image as long as that image can still arrive: until a newer image shows that none within
``slop`` will (a DDS writer delivers in order), until the image stream has been silent for ``wait_s`` and
the mask set has waited that long (a dead camera or a wrong topic), or until it is pushed out of its
queue; then it is dropped and counted. A late image (a reliable repair, a slow link) is still paired.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

ImageT = TypeVar("ImageT")
MasksT = TypeVar("MasksT")


@dataclass
class SyncStats:
    pairs: int = 0
    masks_unmatched: int = 0  # dropped: no image within slop
    images_unused: int = 0  # images pushed out without masks (normal when masks come slower)


class ApproximateTimeSync(Generic[ImageT, MasksT]):
    """Feed ``add_image`` / ``add_masks`` with stamps in nanoseconds; each returns the pairs it completed."""

    def __init__(
        self, slop_s: float, queue_size: int, wait_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if slop_s < 0 or queue_size < 1 or wait_s <= 0:
            raise ValueError("slop must be >= 0, queue_size >= 1 and wait_s > 0")
        self.slop_ns = int(slop_s * 1e9)
        self.wait_s, self.clock = wait_s, clock
        self.images: deque[tuple[int, ImageT]] = deque()
        self.masks: deque[tuple[int, MasksT, float]] = deque()  # stamp, masks, arrival (clock seconds)
        self.queue_size = queue_size
        self.stats = SyncStats()
        self.last_image_at: float | None = None  # clock seconds

    def add_image(self, stamp_ns: int, image: ImageT) -> list[tuple[ImageT, MasksT]]:
        self.last_image_at = self.clock()
        self.images.append((stamp_ns, image))
        if len(self.images) > self.queue_size:
            self.images.popleft()
            self.stats.images_unused += 1
        return self._match()

    def add_masks(self, stamp_ns: int, masks: MasksT) -> list[tuple[ImageT, MasksT]]:
        self.masks.append((stamp_ns, masks, self.clock()))
        if len(self.masks) > self.queue_size:
            self.masks.popleft()
            self.stats.masks_unmatched += 1
        return self._match()

    def _match(self) -> list[tuple[ImageT, MasksT]]:
        pairs = []
        remaining: deque[tuple[int, MasksT, float]] = deque()
        newest_image = self.images[-1][0] if self.images else None
        for stamp, masks, arrived in self.masks:
            best = self._closest_image(stamp)
            if best is not None:
                image = self.images[best][1]
                del self.images[best]
                pairs.append((image, masks))
                self.stats.pairs += 1
            elif newest_image is not None and newest_image > stamp + self.slop_ns:
                self.stats.masks_unmatched += 1  # images arrive in order: no match can come any more
            else:
                remaining.append((stamp, masks, arrived))
        self.masks = remaining
        return pairs

    def _closest_image(self, stamp: int) -> int | None:
        best, best_gap = None, None
        for i, (image_stamp, _) in enumerate(self.images):
            gap = abs(image_stamp - stamp)
            if gap <= self.slop_ns and (best_gap is None or gap < best_gap):
                best, best_gap = i, gap
        return best

    def expire(self) -> int:
        """Drop mask sets that waited over ``wait_s`` while no image at all arrived for ``wait_s``.

        While images keep coming, a waiting mask set's image may still be on its way (every image newer
        than it would already have dropped it in ``_match``). Returns how many were dropped.
        """
        now = self.clock()
        if self.last_image_at is not None and now - self.last_image_at <= self.wait_s:
            return 0
        deadline = now - self.wait_s
        before = len(self.masks)
        self.masks = deque(entry for entry in self.masks if entry[2] >= deadline)
        dropped = before - len(self.masks)
        self.stats.masks_unmatched += dropped
        return dropped
