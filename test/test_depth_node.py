"""The node with ``use_depth``: depth and camera info paired with the image by stamp, 3D positions in the
descriptions, RViz markers; bad or missing depth costs the positions only (real rclpy, localhost)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from osprey_interfaces.srv import FindRegion
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import NodeProcess, RosTester, domain_id
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from test_perception_node import masks_msg, stamp_of
from visualization_msgs.msg import Marker, MarkerArray

from osprey_model.shapes import Shape, render
from osprey_ros.depth import PinholeCamera
from osprey_ros.image_conversion import numpy_to_image

IMAGE_TOPIC, MASKS_TOPIC = "/rgbd/image", "/rgbd/region_masks"
DEPTH_TOPIC, INFO_TOPIC = "/rgbd/depth", "/rgbd/camera_info"
WIDTH, HEIGHT = 96, 72
CAMERA = PinholeCamera(fx=80.0, fy=80.0, cx=47.5, cy=35.5, width=WIDTH, height=HEIGHT)
CARD_DEPTH = {0: 1.5, 1: 2.25}  # metres, per region
_stamps = itertools.count(3000)


def scene() -> tuple[np.ndarray, list[np.ndarray]]:
    shapes = [Shape("circle", "red", 30, 36, 18), Shape("square", "blue", 68, 36, 18)]
    return render(shapes, WIDTH, HEIGHT)


def depth_of(masks: list[np.ndarray]) -> np.ndarray:
    depth = np.full((HEIGHT, WIDTH), 4.0, np.float32)
    for i, mask in enumerate(masks):
        depth[mask] = CARD_DEPTH[i]
    return depth


@pytest.fixture(scope="module")
def rgbd(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    domain = domain_id(23)
    parameters = {
        "model_dir": str(tiny_dir),
        "max_new_tokens": 3,
        "cpu_threads": 1,
        "use_depth": True,
        "reuse_max_age": 50,  # every frame of this module can reuse: which frames do is then certain
        "qos_reliability": "reliable",
        "slop": 0.05,
    }
    launch = {
        "image_topic": IMAGE_TOPIC, "masks_topic": MASKS_TOPIC, "depth_topic": DEPTH_TOPIC,
        "camera_info_topic": INFO_TOPIC,
    }  # fmt: skip
    node = NodeProcess(tmp_path_factory.mktemp("rgbd"), domain, parameters, launch)
    tester = RosTester(domain, IMAGE_TOPIC, MASKS_TOPIC)
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    tester.depth_pub = tester.node.create_publisher(Image, DEPTH_TOPIC, qos)
    tester.info_pub = tester.node.create_publisher(CameraInfo, INFO_TOPIC, qos)
    tester.markers = []
    tester.node.create_subscription(MarkerArray, "/osprey_perception/markers", tester.markers.append, qos)
    try:
        node.wait_for_log(r"ready: model", timeout=120)
        tester.wait_for_node()
        tester.spin_until(
            lambda: tester.depth_pub.get_subscription_count() > 0 and tester.info_pub.get_subscription_count() > 0,
            30,
            "the depth subscriptions",
        )
        yield node, tester
    finally:
        tester.close()
        node.stop()


def send(tester: RosTester, depth: Image | None, info: bool = True, image_size=(WIDTH, HEIGHT)):
    """Depth and camera info first (as a driver may), then the image and masks, all with one stamp."""
    header = Header(stamp=Time(sec=next(_stamps), nanosec=0), frame_id="rgbd_optical")
    if depth is not None:
        depth.header = header
        tester.depth_pub.publish(depth)
    if info:
        tester.info_pub.publish(CAMERA.to_camera_info(header))
    for _ in range(10):  # let the depth arrive before the frame is described
        tester.executor.spin_once(timeout_sec=0.02)
    image, masks = scene()
    tester.image_pub.publish(numpy_to_image(image, "rgb8", header=header))
    tester.masks_pub.publish(masks_msg(header, masks))
    key = stamp_of(header)
    tester.spin_until(lambda: any(stamp_of(d) == key for d in tester.descriptions), 60, f"descriptions of {key}")
    return next(d for d in tester.descriptions if stamp_of(d) == key), masks


def test_regions_get_their_3d_position_and_extent_from_16uc1_depth(rgbd) -> None:
    _, tester = rgbd
    _, masks = scene()
    millimetres = (depth_of(masks) * 1000).astype(np.uint16)
    described, masks = send(tester, numpy_to_image(millimetres, "16UC1"))
    assert described.header.frame_id == "rgbd_optical"
    for i, region in enumerate(described.regions):
        assert region.has_position and region.depth_pixels == int(masks[i].sum())
        xs = np.nonzero(masks[i])[1]
        z = CARD_DEPTH[i]
        expected_x = (np.median(xs) - CAMERA.cx) * z / CAMERA.fx
        assert region.position.z == pytest.approx(z, abs=1e-3)
        assert region.position.x == pytest.approx(expected_x, abs=0.02)
        assert region.extent.x == pytest.approx(
            (np.percentile(xs, 95) - np.percentile(xs, 5)) * z / CAMERA.fx, abs=0.02
        )
    assert described.regions[0].position.x < 0 < described.regions[1].position.x  # left of centre, right of it
    # Typed attributes (the shipped default: category and colour; this random model's words are noise),
    # and the label's confidence.
    assert all(r.category and r.colour and not r.material and not r.state for r in described.regions)
    assert all(0.0 < r.label_confidence <= 1.0 for r in described.regions)
    key = stamp_of(described)
    tester.spin_until(lambda: any(m.markers and stamp_of(m.markers[0]) == key for m in tester.markers), 10, "markers")
    markers = next(m for m in tester.markers if m.markers and stamp_of(m.markers[0]) == key).markers
    assert markers[0].action == Marker.DELETEALL
    boxes = [m for m in markers if m.type == Marker.CUBE]
    assert [b.pose.position.z for b in boxes] == pytest.approx([1.5, 2.25], abs=1e-3)
    assert all(m.header.frame_id == "rgbd_optical" for m in markers)


def test_32fc1_holes_leave_a_region_without_position_and_the_other_placed(rgbd) -> None:
    _, tester = rgbd
    _, masks = scene()
    metres = depth_of(masks)
    metres[masks[1]] = np.nan  # the blue square: no return at all
    described, _ = send(tester, numpy_to_image(metres, "32FC1"))
    first, second = described.regions
    assert first.has_position and first.position.z == pytest.approx(1.5, abs=1e-3)
    assert not second.has_position and second.depth_pixels == 0
    assert (second.position.x, second.position.y, second.position.z) == (0.0, 0.0, 0.0)


def test_missing_or_wrong_depth_costs_the_positions_only(rgbd) -> None:
    node, tester = rgbd
    described, _ = send(tester, None)  # no depth for this stamp
    assert len(described.regions) == 2 and not any(r.has_position for r in described.regions)
    node.wait_for_log(r"no depth image and camera_info within slop")
    small = numpy_to_image(np.full((10, 10), 1000, np.uint16), "16UC1")
    described, _ = send(tester, small)
    assert len(described.regions) == 2 and not any(r.has_position for r in described.regions)
    node.wait_for_log(r"depth not used: depth image 10x10 is not the camera image's 96x72")
    colour = numpy_to_image(np.zeros((HEIGHT, WIDTH, 3), np.uint8), "rgb8")
    described, _ = send(tester, colour)
    assert not any(r.has_position for r in described.regions)
    node.wait_for_log(r"depth not used: depth encoding 'rgb8' not supported")
    _, masks = scene()
    described, _ = send(tester, numpy_to_image((depth_of(masks) * 1000).astype(np.uint16), "16UC1"))
    assert all(r.has_position for r in described.regions)  # and it keeps serving


def test_static_regions_keep_ids_and_reuse_their_text_until_the_masks_change(rgbd) -> None:
    """No ids in RegionMasks: the node's own, stable across frames; a static scene is described once per
    reuse_max_age frames, a changed one every time (the diagnostics count both)."""
    _, tester = rgbd
    _, masks = scene()
    depth = numpy_to_image((depth_of(masks) * 1000).astype(np.uint16), "16UC1")
    first, _ = send(tester, depth)
    ids = [r.id for r in first.regions]
    tester.fresh_diagnostics()
    reused_before = int(tester.diagnostic("regions_reused"))
    frames = [send(tester, depth)[0] for _ in range(3)]
    assert all([r.id for r in f.regions] == ids for f in frames)
    assert all(r.reused for f in frames for r in f.regions)
    assert all([r.label for r in f.regions] == [r.label for r in first.regions] for f in frames)
    tester.fresh_diagnostics()
    assert int(tester.diagnostic("regions_reused")) == reused_before + 6
    described_before = int(tester.diagnostic("regions_described"))
    image, _ = scene()
    shifted = [np.roll(m, 12, axis=1) for m in masks]  # both regions move by 12 px: IoU ~0.5, same ids
    header = Header(stamp=Time(sec=next(_stamps), nanosec=0), frame_id="rgbd_optical")
    tester.image_pub.publish(numpy_to_image(np.roll(image, 12, axis=1), "rgb8", header=header))
    tester.masks_pub.publish(masks_msg(header, shifted))
    key = stamp_of(header)
    tester.spin_until(lambda: any(stamp_of(d) == key for d in tester.descriptions), 60, "the moved frame")
    moved = next(d for d in tester.descriptions if stamp_of(d) == key)
    assert [r.id for r in moved.regions] == ids and not any(r.reused for r in moved.regions)
    tester.fresh_diagnostics()
    assert int(tester.diagnostic("regions_described")) == described_before + 2


def test_find_region_ranks_the_described_regions_and_says_what_is_wrong(rgbd) -> None:
    _, tester = rgbd
    _, masks = scene()
    described, masks = send(tester, numpy_to_image((depth_of(masks) * 1000).astype(np.uint16), "16UC1"))
    labels = {r.id: r.label for r in described.regions}
    second = described.regions[1]
    own_words = "; ".join(dict.fromkeys(w.strip() for w in (second.label, second.category, second.colour) if w.strip()))
    found = tester.call(FindRegion.Request(query=own_words, stamp=described.header.stamp))
    assert found.success, found.message
    assert stamp_of(found.header) == stamp_of(described) and sorted(found.ids) == sorted(labels)
    assert found.ids[0] == second.id  # a region's own words (label and attributes) match it best
    assert list(found.scores) == sorted(found.scores, reverse=True) and found.scores[0] == pytest.approx(1.0, abs=1e-3)
    assert [labels[i] for i in found.ids] == list(found.labels)
    by_id = dict(zip(found.ids, found.masks, strict=True))
    for region, mask in zip(described.regions, masks, strict=True):
        assert np.array_equal(np.frombuffer(bytes(by_id[region.id].data), np.uint8).reshape(HEIGHT, WIDTH) > 0, mask)
    newest = tester.call(FindRegion.Request(query="anything", max_results=1, verify=True))  # stamp 0: the newest
    assert newest.success and len(newest.ids) == 1 and 0.0 <= newest.scores[0] <= 1.0, newest.message
    for request, message in (
        (FindRegion.Request(query="  "), "empty query"),
        (FindRegion.Request(query="x" * 400), "at most 300"),
        (FindRegion.Request(query="mug", stamp=Time(sec=5)), "no described frame near stamp 5.000"),
    ):
        response = tester.call(request)
        assert not response.success and message in response.message, response.message
    assert tester.call(FindRegion.Request(query="mug")).success  # and it keeps serving


def test_classes_that_do_not_match_the_masks_are_refused_and_the_node_keeps_serving(rgbd) -> None:
    node, tester = rgbd
    image, masks = scene()
    header = Header(stamp=Time(sec=next(_stamps), nanosec=0), frame_id="rgbd_optical")
    bad = masks_msg(header, masks)
    bad.classes = ["circle"]
    tester.image_pub.publish(numpy_to_image(image, "rgb8", header=header))
    tester.masks_pub.publish(bad)
    node.wait_for_log(r"1 classes for 2 masks")
    described, _ = send(tester, numpy_to_image((depth_of(masks) * 1000).astype(np.uint16), "16UC1"))
    assert len(described.regions) == 2


def test_the_overlay_is_drawn_only_while_someone_subscribes(rgbd) -> None:
    _, tester = rgbd
    _, masks = scene()
    depth = numpy_to_image((depth_of(masks) * 1000).astype(np.uint16), "16UC1")
    send(tester, depth)
    tester.fresh_diagnostics()
    drawn = int(tester.diagnostic("overlays_drawn"))
    assert drawn > 0 and tester.overlays  # the tester watches ~/overlay: it is drawn
    (watcher,) = [s for s in tester.node.subscriptions if s.topic_name.endswith("/overlay")]
    tester.node.destroy_subscription(watcher)
    overlay_topic = "/osprey_perception/overlay"
    tester.spin_until(lambda: tester.node.count_subscribers(overlay_topic) == 0, 10, "the overlay reader to leave")
    for _ in range(2):
        send(tester, depth)
    tester.fresh_diagnostics()
    assert int(tester.diagnostic("overlays_drawn")) == drawn  # nobody watching: not drawn
