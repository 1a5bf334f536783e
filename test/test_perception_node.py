"""The perception node in its own process, driven over real DDS by a test node (localhost only)."""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from osprey_interfaces.msg import RegionMasks
from osprey_interfaces.srv import DescribeRegions
from rclpy.time import Time as RosTime
from ros_harness import NodeProcess, RosTester, domain_id
from std_msgs.msg import Header

from osprey_model.shapes import Shape, render
from osprey_ros.image_conversion import numpy_to_image

IMAGE_TOPIC, MASKS_TOPIC = "/cam/image", "/cam/region_masks"
MAX_REGIONS = 6
WIDTH, HEIGHT = 96, 72
_stamps = itertools.count(1000)


def next_header() -> Header:
    return Header(stamp=Time(sec=next(_stamps), nanosec=250_000_000), frame_id="cam")


def scene() -> tuple[np.ndarray, list[np.ndarray]]:
    shapes = [Shape("circle", "red", 35, 30, 22), Shape("square", "blue", 60, 42, 20)]
    image, masks = render(shapes, WIDTH, HEIGHT)
    return image, masks


def masks_msg(header: Header, masks: list[np.ndarray], ids: list[int] | None = None) -> RegionMasks:
    msg = RegionMasks(header=header, ids=ids or [])
    msg.masks = [numpy_to_image(m.astype(np.uint8) * 255, "mono8", header=header) for m in masks]
    return msg


def stamp_of(msg) -> tuple[int, int]:
    stamp = msg.stamp if isinstance(msg, Header) else msg.header.stamp
    return stamp.sec, stamp.nanosec


@pytest.fixture(scope="module")
def ros(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    domain = domain_id(11)
    parameters = {
        "model_dir": str(tiny_dir),
        "max_new_tokens": 3,
        "max_regions": MAX_REGIONS,
        "slop": 0.05,
        "diagnostics_period": 0.2,
        "cache_size": 4,
        "cpu_threads": 1,  # leaves a core to the node's executor and DDS threads
        "sync_timeout": 0.5,
        "service_timeout": 3.0,
    }
    node = NodeProcess(
        tmp_path_factory.mktemp("node"), domain, parameters, {"image_topic": IMAGE_TOPIC, "masks_topic": MASKS_TOPIC}
    )
    tester = RosTester(domain, IMAGE_TOPIC, MASKS_TOPIC)
    try:
        node.wait_for_log(r"ready: model .* \(1 CPU threads\)", timeout=120)
        tester.wait_for_node()
        first_description(tester, *scene())  # the pipeline is live end to end before any test runs
        yield node, tester
    finally:
        tester.close()
        node.stop()


def publish_frame(tester: RosTester, image: np.ndarray, masks: list[np.ndarray], **kwargs) -> Header:
    header = next_header()
    tester.image_pub.publish(numpy_to_image(image, "rgb8", header=header))
    tester.masks_pub.publish(masks_msg(header, masks, **kwargs))
    return header


def wait_description(tester: RosTester, header: Header, timeout: float = 60.0):
    key = stamp_of(header)
    tester.spin_until(lambda: any(stamp_of(d) == key for d in tester.descriptions), timeout, f"descriptions of {key}")
    return next(d for d in tester.descriptions if stamp_of(d) == key)


def first_description(tester: RosTester, image: np.ndarray, masks: list[np.ndarray], timeout: float = 60.0):
    """Publish frames until one is described. The camera input is best-effort, so a frame sent while the
    node's side of the match is still settling is lost, as it would be from a real camera."""
    deadline = time.monotonic() + timeout
    while True:
        header = publish_frame(tester, image, masks)
        try:
            return wait_description(tester, header, timeout=2.0)
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def assert_still_serving(tester: RosTester) -> None:
    image, masks = scene()
    request = DescribeRegions.Request(image=numpy_to_image(image, "rgb8", header=next_header()), max_new_tokens=2)
    request.masks = [numpy_to_image(m.astype(np.uint8) * 255, "mono8") for m in masks]
    response = tester.call(request)
    assert response.success, response.message
    assert len(response.answers) == 2


def test_frame_gives_one_description_array_and_overlay(ros) -> None:
    _, tester = ros
    image, masks = scene()
    header = publish_frame(tester, image, masks, ids=[7, 9])
    result = wait_description(tester, header)
    tester.spin_until(lambda: any(stamp_of(o) == stamp_of(header) for o in tester.overlays), 30, "the overlay")
    assert result.header.frame_id == "cam"
    assert [r.id for r in result.regions] == [7, 9]
    assert [r.area for r in result.regions] == [int(m.sum()) for m in masks]
    ys, xs = np.nonzero(masks[1])
    box = result.regions[1].bbox
    assert (box.x_offset, box.y_offset, box.width, box.height) == (xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1)
    assert all(isinstance(r.label, str) and r.description == "" for r in result.regions)
    assert result.model_name and result.inference_time > 0
    overlay = next(o for o in tester.overlays if stamp_of(o) == stamp_of(header))
    assert (overlay.width, overlay.height, overlay.encoding) == (WIDTH, HEIGHT, "rgb8")
    tester.spin_until(lambda: bool(tester.diagnostics), 10, "diagnostics")
    assert sum(stamp_of(d) == stamp_of(header) for d in tester.descriptions) == 1


def test_service_on_cached_frame_reuses_features(ros) -> None:
    _, tester = ros
    image, masks = scene()
    header = publish_frame(tester, image, masks)
    wait_description(tester, header)
    tester.fresh_diagnostics()
    encoded_before = int(tester.diagnostic("frames_encoded_for_service"))
    request = DescribeRegions.Request(stamp=header.stamp, question="What colour is <region>?", max_new_tokens=2)
    request.masks = [numpy_to_image(masks[0].astype(np.uint8) * 255, "mono8")]
    response = tester.call(request)
    assert response.success, response.message
    assert len(response.answers) == 1 and response.stamp == header.stamp
    tester.fresh_diagnostics()
    assert int(tester.diagnostic("frames_encoded_for_service")) == encoded_before  # no re-encoding

    latest = DescribeRegions.Request(max_new_tokens=2)  # zero stamp: the latest frame
    latest.masks = request.masks
    response = tester.call(latest)
    assert response.success and response.stamp == header.stamp


def test_service_with_image_in_request(ros) -> None:
    _, tester = ros
    assert_still_serving(tester)


def test_bad_topic_input_is_logged_and_node_keeps_serving(ros) -> None:
    node, tester = ros
    image, masks = scene()
    cases = []

    start = len(node.log())
    publish_frame(tester, image, [np.ones((10, 10), bool)])
    cases.append(node.wait_for_log(r"mask 0 has shape \(10, 10\), the image is \(72, 96\)", since=start))

    start = len(node.log())
    publish_frame(tester, image, [masks[0], np.zeros_like(masks[1])])
    cases.append(node.wait_for_log(r"mask 1 is empty", since=start))

    for mutate, pattern in [
        (lambda msg: setattr(msg, "encoding", "yuv422"), r"unsupported image encoding 'yuv422'"),
        (lambda msg: setattr(msg, "data", bytes(msg.data)[:100]), r"truncated image data: 100 bytes"),
    ]:
        start = len(node.log())
        header = next_header()
        msg = numpy_to_image(image, "rgb8", header=header)
        mutate(msg)
        tester.image_pub.publish(msg)
        tester.masks_pub.publish(masks_msg(header, masks))
        cases.append(node.wait_for_log(pattern, since=start))

    start = len(node.log())
    header = next_header()
    tester.masks_pub.publish(masks_msg(header, masks))  # no image ever comes for this stamp
    later = publish_frame(tester, image, masks)
    cases.append(node.wait_for_log(r"dropped 1 mask set\(s\) with no camera image within slop=0.05s", since=start))
    wait_description(tester, later)
    tester.spin_until(lambda: int(tester.diagnostic("mask_sets_unmatched")) >= 1, 10, "the unmatched count")

    assert len(cases) == 5 and node.alive()
    assert_still_serving(tester)


def test_masks_with_no_image_stream_at_all_are_dropped_after_the_timeout(ros) -> None:
    node, tester = ros
    _, masks = scene()
    tester.fresh_diagnostics()
    unmatched_before = int(tester.diagnostic("mask_sets_unmatched"))
    start = len(node.log())
    tester.masks_pub.publish(masks_msg(next_header(), masks))  # no image follows, ever
    node.wait_for_log(r"dropped 1 mask set\(s\) with no camera image", since=start)
    tester.fresh_diagnostics()
    assert int(tester.diagnostic("mask_sets_unmatched")) == unmatched_before + 1
    assert_still_serving(tester)


def test_thousand_masks_are_capped_and_said_so(ros) -> None:
    node, tester = ros
    image, masks = scene()
    many = [masks[i % 2] for i in range(1000)]
    start = len(node.log())
    header = publish_frame(tester, image, many)
    node.wait_for_log(rf"1000 masks received, describing the first {MAX_REGIONS} \(max_regions\)", since=start)
    result = wait_description(tester, header)
    assert len(result.regions) == MAX_REGIONS

    request = DescribeRegions.Request(image=numpy_to_image(image, "rgb8", header=next_header()), max_new_tokens=1)
    request.masks = [numpy_to_image(m.astype(np.uint8) * 255, "mono8") for m in many]
    response = tester.call(request)
    assert response.success and len(response.answers) == MAX_REGIONS
    assert f"capped: 1000 masks received, answered the first {MAX_REGIONS}" in response.message


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda image, masks: DescribeRegions.Request(), "empty request"),
        (
            lambda image, masks: DescribeRegions.Request(
                image=numpy_to_image(image, "rgb8"), masks=[numpy_to_image(np.ones((5, 5), np.uint8), "mono8")]
            ),
            r"mask 0 has shape \(5, 5\)",
        ),
        (
            lambda image, masks: DescribeRegions.Request(
                image=numpy_to_image(image, "rgb8"), masks=[numpy_to_image(masks[0].astype(np.uint16), "mono16")]
            ),
            "masks must be mono8",
        ),
        (
            lambda image, masks: DescribeRegions.Request(
                stamp=Time(sec=5), masks=[numpy_to_image(masks[0].astype(np.uint8), "mono8")]
            ),
            "no cached frame near stamp 5.000",
        ),
    ],
    ids=["empty", "mask-size", "mask-encoding", "unknown-stamp"],
)
def test_bad_service_requests_get_error_messages(ros, build, message) -> None:
    node, tester = ros
    image, masks = scene()
    start = len(node.log())
    response = tester.call(build(image, masks))
    assert not response.success and not response.answers
    assert re.search(message, response.message), response.message
    node.wait_for_log(r"~/describe: .*" + message, since=start)
    assert_still_serving(tester)


def test_overload_keeps_memory_bounded_and_newest_frame(ros) -> None:
    node, tester = ros
    image, masks = scene()
    four = [*masks, masks[0], masks[1]]
    warmup = [wait_description(tester, publish_frame(tester, image, four)) for _ in range(3)]
    model_period = float(np.median([w.inference_time for w in warmup]))
    tester.fresh_diagnostics()
    keys = ("images_received", "frames_matched", "frames_described", "frames_dropped", "frame_errors")
    before = {key: int(tester.diagnostic(key)) for key in keys}
    rss_before = node.rss_mb()

    interval = model_period / 2  # twice the rate the model can serve
    headers = []
    for _ in range(40):
        headers.append(publish_frame(tester, image, four))
        spin_for(tester, interval)
    newest = wait_description(tester, headers[-1], timeout=120)
    assert len(newest.regions) == 4
    tester.fresh_diagnostics()
    seen = {key: int(tester.diagnostic(key)) - before[key] for key in keys}
    print(
        f"overload: model period {model_period * 1000:.0f} ms, {len(headers)} frames sent, "
        f"{seen['images_received']} received, {seen['frames_matched']} matched, {seen['frames_described']} described, "
        f"{seen['frames_dropped']} dropped, rss {rss_before:.0f} -> {node.rss_mb():.0f} MB"
    )
    # KEEP_LAST inputs may lose frames in transport when the executor falls behind (a slow or loaded host):
    # newest-wins is the contract there too. What reaches the node must all be accounted for.
    assert seen["images_received"] <= len(headers) and seen["frame_errors"] == 0
    assert seen["frames_matched"] == seen["frames_described"] + seen["frames_dropped"]
    assert seen["frames_described"] < len(headers)  # the overload was shed, not queued
    assert seen["frames_dropped"] + (len(headers) - seen["images_received"]) > 0
    assert node.rss_mb() - rss_before < 150  # at most one pending frame; no queue grows with the overload


def spin_for(tester: RosTester, seconds: float) -> None:
    """Keep the test's executor serving for ``seconds`` (paces publishing at a fixed rate)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        tester.executor.spin_once(timeout_sec=max(0.0, min(0.01, end - time.monotonic())))


def request_for(image: np.ndarray, masks: list[np.ndarray], header: Header | None = None, **kwargs):
    request = DescribeRegions.Request(image=numpy_to_image(image, "rgb8", header=header or Header()), **kwargs)
    request.masks = [numpy_to_image(m.astype(np.uint8) * 255, "mono8") for m in masks]
    return request


def test_absurd_image_sizes_are_refused_on_the_service_and_the_topic(ros) -> None:
    node, tester = ros
    thin = np.zeros((2, 60000, 3), np.uint8)  # 360 KB, but the shortest-edge resize asked 11 GiB
    mask = np.zeros((2, 60000), bool)
    mask[:, :100] = True
    response = tester.call(request_for(thin, [mask], max_new_tokens=1))
    assert not response.success and "aspect ratio 30000.0 exceeds 32" in response.message
    start = len(node.log())
    publish_frame(tester, np.zeros((2, 4000, 3), np.uint8), [mask[:, :4000]])
    node.wait_for_log(r"frame .*: image is 4000x2: aspect ratio 2000.0 exceeds 32", since=start)
    assert node.alive()
    assert_still_serving(tester)


def test_images_sharing_a_stamp_are_never_answered_with_each_others_features(ros) -> None:
    """Stamp 0 from an unstamped camera, or a stamp reused: each different image is encoded on its own."""
    _, tester = ros
    image, masks = scene()
    header = publish_frame(tester, image, masks)
    wait_description(tester, header)
    tester.fresh_diagnostics()
    before = int(tester.diagnostic("frames_encoded_for_service"))
    other = image[:, ::-1].copy()  # a different picture under the same stamp
    assert tester.call(request_for(other, masks, header, max_new_tokens=1)).success
    tester.fresh_diagnostics()
    assert int(tester.diagnostic("frames_encoded_for_service")) == before + 1
    assert tester.call(request_for(image, masks, header, max_new_tokens=1)).success  # the cached frame itself
    tester.fresh_diagnostics()
    assert int(tester.diagnostic("frames_encoded_for_service")) == before + 1

    encoded = int(tester.diagnostic("frames_encoded"))
    unstamped = Header(frame_id="cam")  # stamp 0
    for picture in (image, other, image[::-1].copy()):
        tester.image_pub.publish(numpy_to_image(picture, "rgb8", header=unstamped))
        tester.masks_pub.publish(masks_msg(unstamped, masks))
        count = sum(stamp_of(d) == (0, 0) for d in tester.descriptions)
        tester.spin_until(lambda c=count: sum(stamp_of(d) == (0, 0) for d in tester.descriptions) > c, 30, "a frame")
    tester.fresh_diagnostics()
    assert int(tester.diagnostic("frames_encoded")) == encoded + 3


def test_service_burst_gets_every_reply_and_never_starves_the_camera(ros) -> None:
    """24 simultaneous requests from 3 callers while the camera streams: every request is answered (success,
    or a clear busy / timed-out error), descriptions keep flowing and /diagnostics keeps its period."""
    node, tester = ros
    image, masks = scene()
    clients = [tester.node.create_client(DescribeRegions, "/osprey_perception/describe") for _ in range(3)]
    for client in clients:
        tester.spin_until(client.service_is_ready, 30, "the service")
    first_diagnostic = len(tester.diagnostics)
    six = [masks[i % 2] for i in range(MAX_REGIONS)]
    futures = [
        clients[i % 3].call_async(request_for(image, six, question="Describe <region> in detail.", max_new_tokens=24))
        for i in range(24)
    ]
    start, described_before = time.monotonic(), len(tester.descriptions)
    headers = []
    while not all(f.done() for f in futures):
        assert time.monotonic() - start < 120, "not every request was answered"
        headers.append(publish_frame(tester, image, masks))
        spin_for(tester, 0.1)
    burst_s = time.monotonic() - start
    described_during = len(tester.descriptions) - described_before
    replies = [f.result() for f in futures]
    ok = sum(r.success for r in replies)
    refused = [r.message for r in replies if not r.success]
    print(f"burst: {ok} answered, {len(refused)} refused in {burst_s:.1f}s, {described_during} frames described")
    assert all(("busy" in m) or ("timed out" in m) for m in refused), refused
    assert ok >= 1 and all(len(r.answers) == MAX_REGIONS for r in replies if r.success)
    assert described_during >= 1  # the camera pipeline kept running through the burst
    # When the node published them (its clock), so that the test's own scheduling does not count.
    stamps = [RosTime.from_msg(d.header.stamp).nanoseconds / 1e9 for d in tester.diagnostics[first_diagnostic:]]
    gaps = np.diff(stamps)
    print(f"diagnostics during the burst: {len(stamps)}, largest gap {gaps.max():.2f}s (period 0.2 s)")
    assert len(gaps) and gaps.max() < 0.6, gaps  # within 3 periods: no executor thread was blocked
    wait_description(tester, headers[-1])
    for client in clients:
        tester.node.destroy_client(client)
    assert node.alive()
