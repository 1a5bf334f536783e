"""The approximate-time synchroniser and the latest-frame-wins slot, without ROS."""

from __future__ import annotations

import threading

from osprey_ros.latest_slot import LatestSlot
from osprey_ros.sync import ApproximateTimeSync

MS = 1_000_000


def test_pairs_within_slop_in_either_order() -> None:
    sync: ApproximateTimeSync[str, str] = ApproximateTimeSync(slop_s=0.01, queue_size=5)
    assert sync.add_image(100 * MS, "img100") == []
    assert sync.add_masks(105 * MS, "m105") == [("img100", "m105")]
    assert sync.add_masks(200 * MS, "m200") == []
    assert sync.add_image(195 * MS, "img195") == [("img195", "m200")]
    assert sync.stats.pairs == 2 and sync.stats.masks_unmatched == 0


def test_closest_image_wins() -> None:
    sync: ApproximateTimeSync[str, str] = ApproximateTimeSync(slop_s=0.05, queue_size=5)
    sync.add_image(100 * MS, "a")
    sync.add_image(130 * MS, "b")
    assert sync.add_masks(125 * MS, "m") == [("b", "m")]


def test_unmatched_masks_are_dropped_after_the_slop_window() -> None:
    sync: ApproximateTimeSync[str, str] = ApproximateTimeSync(slop_s=0.01, queue_size=5)
    assert sync.add_masks(100 * MS, "orphan") == []
    assert sync.stats.masks_unmatched == 0  # an image may still come
    assert sync.add_image(300 * MS, "late") == []
    assert sync.stats.masks_unmatched == 1 and not sync.masks
    assert sync.add_masks(500 * MS, "no-images") == []
    assert sync.expire(505 * MS) == 0
    assert sync.expire(520 * MS) == 1 and sync.stats.masks_unmatched == 2


def test_queues_are_bounded() -> None:
    sync: ApproximateTimeSync[int, int] = ApproximateTimeSync(slop_s=0.0, queue_size=3)
    for i in range(100):
        sync.add_image(i * 10 * MS, i)
    assert len(sync.images) == 3 and sync.stats.images_unused == 97
    sync2: ApproximateTimeSync[int, int] = ApproximateTimeSync(slop_s=0.0, queue_size=3)
    for i in range(50):
        sync2.add_masks(i * MS, i)
    assert len(sync2.masks) == 3 and sync2.stats.masks_unmatched == 47


def test_latest_slot_keeps_newest_and_counts_drops() -> None:
    slot: LatestSlot[int] = LatestSlot()
    for i in range(10):
        slot.put(i)
    assert slot.take(timeout=0) == 9 and slot.dropped == 9
    assert slot.take(timeout=0.01) is None
    got = []
    consumer = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    consumer.start()
    slot.put(42)
    consumer.join(5)
    assert got == [42]
    slot.close()
    assert slot.take(timeout=5) is None
