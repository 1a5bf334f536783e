"""The approximate-time synchroniser and the latest-frame-wins slot, without ROS."""

from __future__ import annotations

import threading
import time

import pytest

from osprey_ros.frame_store import FrameStore
from osprey_ros.model_worker import ModelWorker, RequestExpired, WorkerBusy
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


def test_a_late_image_is_still_paired_while_the_stream_is_alive() -> None:
    """Reliable repairs delivered images 0.8-2.9 s late; a 1 s wall-clock timeout threw their masks away."""
    now = [0.0]
    sync: ApproximateTimeSync[str, str] = ApproximateTimeSync(0.01, 50, wait_s=1.0, clock=lambda: now[0])
    assert sync.add_image(0, "img0") == []
    assert sync.add_masks(100 * MS, "m100") == []  # its image is delayed in transport
    for step in range(1, 6):  # the camera stream is alive: older images keep arriving, none newer than 100 ms
        now[0] = 0.5 * step
        sync.add_image(step * MS, f"old{step}")
        assert sync.expire() == 0
    assert sync.add_image(100 * MS, "img100") == [("img100", "m100")]  # 2.5 s late, still described
    assert sync.stats.masks_unmatched == 0


def test_masks_without_any_image_stream_expire_after_the_wait() -> None:
    now = [10.0]
    sync: ApproximateTimeSync[str, str] = ApproximateTimeSync(0.01, 5, wait_s=1.0, clock=lambda: now[0])
    sync.add_masks(500 * MS, "first")
    now[0] = 10.6
    sync.add_masks(600 * MS, "second")
    assert sync.expire() == 0
    now[0] = 11.2  # the first waited 1.2 s, the second 0.6 s
    assert sync.expire() == 1 and [m for _, m, _ in sync.masks] == ["second"]
    assert sync.stats.masks_unmatched == 1
    now[0] = 11.3
    assert sync.add_image(600 * MS, "late but in time") == [("late but in time", "second")]


def test_queues_are_bounded() -> None:
    sync: ApproximateTimeSync[int, int] = ApproximateTimeSync(slop_s=0.0, queue_size=3)
    for i in range(100):
        sync.add_image(i * 10 * MS, i)
    assert len(sync.images) == 3 and sync.stats.images_unused == 97
    sync2: ApproximateTimeSync[int, int] = ApproximateTimeSync(slop_s=0.0, queue_size=3)
    for i in range(50):
        sync2.add_masks(i * MS, i)
    assert len(sync2.masks) == 3 and sync2.stats.masks_unmatched == 47


def test_worker_keeps_newest_frame_and_counts_drops() -> None:
    release = threading.Event()
    seen: list[int] = []

    def process(frame: int) -> None:
        release.wait(5)
        seen.append(frame)

    worker: ModelWorker[int] = ModelWorker(process, on_error=lambda exc: None)
    worker.submit_frame(0)  # taken at once, blocks in process()
    deadline = time.monotonic() + 5
    while worker.pending_frame and time.monotonic() < deadline:
        time.sleep(0.001)
    for i in range(1, 10):
        worker.submit_frame(i)
    assert worker.frames_dropped == 8  # 1..8 were replaced, 9 waits
    release.set()
    while worker.frames_done < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert seen == [0, 9]
    worker.stop()


def test_worker_errors_reach_the_caller() -> None:
    errors: list[BaseException] = []
    worker: ModelWorker[int] = ModelWorker(lambda frame: 1 / frame, on_error=errors.append, max_pending_requests=2)
    assert worker.submit(lambda: 6 * 7, timeout=5).result(timeout=5) == 42
    with pytest.raises(ValueError, match="bad question"):
        worker.submit(lambda: (_ for _ in ()).throw(ValueError("bad question")), timeout=5).result(timeout=5)
    worker.submit_frame(0)  # ZeroDivisionError inside the model thread: reported, thread survives
    assert worker.submit(lambda: "alive", timeout=5).result(timeout=5) == "alive"
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.001)
    assert isinstance(errors[0], ZeroDivisionError)
    worker.stop()


def test_worker_takes_turns_between_requests_and_frames_and_expires_late_requests() -> None:
    order: list[str] = []
    gate = threading.Event()
    now = [0.0]

    def process(frame: int) -> None:
        order.append(f"frame{frame}")
        gate.wait(5)

    worker: ModelWorker[int] = ModelWorker(
        process, on_error=lambda exc: None, max_pending_requests=3, clock=lambda: now[0]
    )
    worker.submit_frame(0)  # taken at once; the model is then busy until the gate opens
    deadline = time.monotonic() + 5
    while worker.pending_frame and time.monotonic() < deadline:
        time.sleep(0.001)
    futures = [worker.submit(lambda i=i: order.append(f"request{i}"), timeout=10) for i in range(2)]
    late = worker.submit(lambda: order.append("late"), timeout=1)
    with pytest.raises(WorkerBusy, match="busy: 3 requests are already waiting"):
        worker.submit(lambda: None, timeout=10)
    worker.submit_frame(1)
    now[0] = 5.0  # the model was busy for 5 s: "late" is past its deadline, the others are not
    gate.set()
    for future in futures:
        future.result(timeout=5)
    with pytest.raises(RequestExpired, match=r"timed out: waited 5.0 s for the model"):
        late.result(timeout=5)
    while worker.frames_done < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    # Requests and frames alternate: the camera frame is not held back behind the whole burst.
    assert order == ["frame0", "request0", "frame1", "request1"]
    assert worker.requests_expired == 1
    worker.stop()


def test_frame_store_is_bounded_and_encodes_once() -> None:
    store: FrameStore[str, str] = FrameStore(size=3)
    keys = [store.add_image(i * 100 * MS, f"img{i}") for i in range(5)]
    assert store.stamps() == [200 * MS, 300 * MS, 400 * MS]
    assert store.find(0, 0) == keys[4]
    assert store.find(310 * MS, 20 * MS) == keys[3]
    assert store.find(350 * MS, 20 * MS) is None
    calls: list[str] = []

    def encode(image: str) -> str:
        calls.append(image)
        return image.upper()

    assert store.features_for(keys[3], encode) == "IMG3"
    assert store.features_for(keys[3], encode) == "IMG3"
    assert calls == ["img3"] and store.encoded == 1
    with pytest.raises(KeyError, match="no longer cached"):
        store.features_for(keys[0], encode)


def test_frames_sharing_a_stamp_never_share_features() -> None:
    """An unstamped camera sends every image with stamp 0: each image is still its own frame."""
    store: FrameStore[str, str] = FrameStore(size=8)
    keys = [store.add_image(0, name) for name in ("a", "b", "c")]
    assert [store.features_for(key, str.upper) for key in keys] == ["A", "B", "C"]
    assert store.encoded == 3
    assert store.find(0, 0) == keys[2] and store.find(5, 10) == keys[2]  # the newest of equal stamps
    assert store.find_same(0, "b", str.__eq__) == keys[1]
    assert store.find_same(0, "d", str.__eq__) is None and store.find_same(7, "b", str.__eq__) is None
