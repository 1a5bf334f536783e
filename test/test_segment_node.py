"""SAM in the node, over real rclpy: the everything mode (no mask topic) and ~/segment_and_describe.

The node runs in its own process on the embedded tiny SAM (the shipped default) and a tiny Osprey.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from osprey_interfaces.msg import RegionPrompt
from osprey_interfaces.srv import SegmentAndDescribe
from ros_harness import NodeProcess, RosTester, domain_id, ros_env
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header
from test_node_lifecycle import set_parameter

from osprey_model.shapes import Shape, render
from osprey_ros.image_conversion import image_to_numpy, numpy_to_image
from osprey_ros.parameters import SPECS

IMAGE_TOPIC = "/cam/image"
WIDTH, HEIGHT = 320, 240
_stamps = itertools.count(5000)


def next_header() -> Header:
    return Header(stamp=Time(sec=next(_stamps), nanosec=500_000_000), frame_id="cam")


def shapes_scene(width: int = WIDTH, height: int = HEIGHT) -> tuple[np.ndarray, list[np.ndarray]]:
    s = width / WIDTH
    shapes = [
        Shape("circle", "red", 90 * s, 90 * s, 45 * s),
        Shape("square", "blue", 230 * s, 150 * s, 48 * s),
        Shape("triangle", "green", 120 * s, 185 * s, 40 * s),
    ]
    return render(shapes, width, height)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def centre(mask: np.ndarray) -> Point:
    ys, xs = np.nonzero(mask)
    i = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))  # the mask's pixel nearest its centroid
    return Point(x=float(xs[i]), y=float(ys[i]))


def box_of(mask: np.ndarray) -> RegionOfInterest:
    ys, xs = np.nonzero(mask)
    return RegionOfInterest(
        x_offset=int(xs.min()), y_offset=int(ys.min()), width=int(np.ptp(xs)) + 1, height=int(np.ptp(ys)) + 1
    )


def mono8(mask: np.ndarray) -> object:
    return numpy_to_image(mask.astype(np.uint8) * 255, "mono8")


@pytest.fixture(scope="module")
def ros(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    domain = domain_id(61)
    parameters = {
        "model_dir": str(tiny_dir),
        "mask_source": "everything",
        "max_new_tokens": 3,
        "max_regions": 8,
        "diagnostics_period": 0.2,
        "cpu_threads": 1,
        "service_timeout": 30.0,
        "reuse_max_age": 0,  # every frame described: the feature-cache tests count the encoder's runs
    }
    node = NodeProcess(tmp_path_factory.mktemp("node"), domain, parameters, {"image_topic": IMAGE_TOPIC})
    tester = RosTester(domain, IMAGE_TOPIC, "/unused/region_masks")
    try:
        node.wait_for_log(r"ready: model .* regions from everything", timeout=120)
        tester.wait_for_node(masks_topic=False)
        yield node, tester
    finally:
        tester.close()
        node.stop()


def described(tester: RosTester, image: np.ndarray, timeout: float = 60.0):
    """Publish the image until a description of it arrives (best-effort input: the first may be lost while
    the match settles); returns that description and the RegionMasks published with it. Each try publishes
    under a new stamp, and a description of any of them counts: on a slow machine SAM and Osprey take longer
    than one try's wait, and the node describes an earlier copy while a later one waits."""
    deadline = time.monotonic() + timeout
    stamps: list[Time] = []

    def answered() -> bool:
        return any(d.header.stamp == stamp for d in tester.descriptions for stamp in stamps)

    while not answered():
        if time.monotonic() > deadline:
            raise AssertionError(f"no description of {len(stamps)} copies of the image in {timeout}s")
        header = next_header()
        stamps.append(header.stamp)
        tester.image_pub.publish(numpy_to_image(image, "rgb8", header=header))
        tester.spin_for(answered, 3.0)
    description = next(d for d in tester.descriptions if d.header.stamp in stamps)
    stamp = description.header.stamp
    tester.spin_until(lambda: any(m.header.stamp == stamp for m in tester.region_masks), 10, "region masks")
    masks = next(m for m in tester.region_masks if m.header.stamp == stamp)
    return description, masks


def wait_until_idle(tester: RosTester, timeout: float = 60.0) -> None:
    """Until every image the node received is described, dropped or failed: ``described`` may leave copies of
    its image in the pipeline, whose encoder runs would count against a service call's."""
    deadline = time.monotonic() + timeout
    while True:
        tester.fresh_diagnostics()
        settled = sum(int(tester.diagnostic(key)) for key in ("frames_described", "frames_dropped", "frame_errors"))
        if settled >= int(tester.diagnostic("images_received")):
            return
        assert time.monotonic() < deadline, "the node is still busy with its images"


def test_everything_mode_describes_the_shapes_sam_found_and_publishes_their_masks(ros) -> None:
    _, tester = ros
    image, truth = shapes_scene()
    description, masks_msg = described(tester, image)
    assert len(description.regions) == len(masks_msg.masks) == len(masks_msg.ids) >= 2
    assert [r.id for r in description.regions] == list(masks_msg.ids)
    masks = [image_to_numpy(m) > 0 for m in masks_msg.masks]
    assert all(m.shape == (HEIGHT, WIDTH) for m in masks)
    for region, mask in zip(description.regions, masks, strict=True):
        assert region.area == int(mask.sum()) and region.label
    best = [max(iou(t, m) for m in masks) for t in truth]
    assert sum(b > 0.7 for b in best) >= 2, best  # the shapes are found, each by a mask that covers it
    tester.fresh_diagnostics()
    assert tester.diagnostic("mask_source") == "everything"
    assert int(tester.diagnostic("regions_found_last")) >= 1


def test_a_blank_frame_gives_an_empty_message_not_an_error(ros) -> None:
    node, tester = ros
    start = len(node.log())
    description, masks_msg = described(tester, np.full((HEIGHT, WIDTH, 3), 228, np.uint8))
    assert description.regions == [] and masks_msg.masks == [] and masks_msg.ids.tolist() == []
    assert "ERROR" not in node.log()[start:]


def test_everything_settings_change_at_run_time_and_the_mask_source_does_not(ros) -> None:
    _, tester = ros
    image, _ = shapes_scene()
    assert set_parameter(tester, "everything_pred_iou_thresh", 1.0) == (True, "")
    try:
        description, masks_msg = described(tester, image)
        assert description.regions == [] and masks_msg.masks == []  # no predicted IoU exceeds 1
    finally:
        default = SPECS["everything_pred_iou_thresh"].default
        assert set_parameter(tester, "everything_pred_iou_thresh", default) == (True, "")
    assert len(described(tester, image)[0].regions) >= 2
    ok, reason = set_parameter(tester, "mask_source", "topic")
    assert not ok and "mask_source is read on configure" in reason


def test_clicks_and_boxes_give_the_clicked_shapes_with_answers(ros) -> None:
    _, tester = ros
    image, truth = shapes_scene(640, 480)
    request = SegmentAndDescribe.Request(image=numpy_to_image(image, "rgb8", header=next_header()), max_new_tokens=2)
    request.prompts = [
        RegionPrompt(points=[centre(truth[0])]),
        RegionPrompt(box=box_of(truth[1])),  # a box and a click in one request: SAM takes them as two batches
        RegionPrompt(points=[centre(truth[2]), centre(truth[0])], labels=[1, 0]),
    ]
    response = tester.call(request)
    assert response.success, response.message
    assert len(response.masks) == len(response.answers) == len(response.scores) == len(response.boxes) == 3
    for i, (mask_msg, true_mask) in enumerate(zip(response.masks, truth, strict=True)):
        mask = image_to_numpy(mask_msg) > 0
        assert mask_msg.encoding == "mono8" and mask.shape == (480, 640)
        assert iou(mask, true_mask) > 0.7, i  # each prompt's mask is the shape it named, in order
        box = response.boxes[i]
        ys, xs = np.nonzero(mask)
        assert (box.x_offset, box.y_offset, box.width, box.height) == (
            xs.min(),
            ys.min(),
            np.ptp(xs) + 1,
            np.ptp(ys) + 1,
        )
    assert all(isinstance(a, str) and a for a in response.answers)
    assert response.stamp == request.image.header.stamp


def test_everything_on_a_cached_frame_reuses_its_features(ros) -> None:
    _, tester = ros
    image, _ = shapes_scene()
    description, masks_msg = described(tester, image)
    wait_until_idle(tester)
    keys = ("frames_encoded_for_service", "encoder_runs_osprey", "encoder_runs_sam")
    before = {key: int(tester.diagnostic(key)) for key in keys}
    assert before["encoder_runs_sam"] >= 1 and before["encoder_runs_osprey"] >= 1
    request = SegmentAndDescribe.Request(stamp=description.header.stamp, everything=True, question="What is <region>?")
    response = tester.call(request)
    assert response.success, response.message
    assert response.stamp == description.header.stamp
    assert len(response.masks) == len(masks_msg.masks)  # the same frame, the same regions
    sent = SegmentAndDescribe.Request(image=numpy_to_image(image, "rgb8", header=next_header()), everything=True)
    assert tester.call(sent).success  # a new image: both encoders run once more
    tester.fresh_diagnostics()
    after = {key: int(tester.diagnostic(key)) for key in keys}
    # The cached frame's SAM embedding and Osprey features were reused; only the sent image was encoded.
    assert after == {key: value + 1 for key, value in before.items()}, (before, after)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (RegionPrompt(points=[Point(x=700.0, y=10.0)]), r"point \(700, 10\) lies outside the 320x240 image"),
        (RegionPrompt(), "prompt 0 is empty: give clicks"),
        (RegionPrompt(box=RegionOfInterest(x_offset=5, y_offset=5, width=0, height=30)), "box is 0x30 pixels: empty"),
        (RegionPrompt(box=RegionOfInterest(x_offset=400, y_offset=5, width=10, height=10)), "lies outside the 320x240"),
        (RegionPrompt(points=[Point(x=5.0, y=5.0)], labels=[1, 0]), "2 labels for 1 points"),
        (RegionPrompt(points=[Point(x=5.0, y=5.0)], labels=[3]), "labels must be one 0"),
        (
            RegionPrompt(mask=numpy_to_image(np.zeros((HEIGHT, WIDTH, 3), np.uint8), "rgb8")),
            "mask 0 has encoding 'rgb8'; masks must be mono8",
        ),
        (RegionPrompt(mask=mono8(np.ones((10, 10), bool))), r"the mask is \(10, 10\) \(H, W\), the image \(240, 320\)"),
        (RegionPrompt(mask=mono8(np.zeros((HEIGHT, WIDTH), bool))), "the prompt mask is empty"),
    ],
    ids=[
        "point-outside",
        "empty-prompt",
        "empty-box",
        "box-outside",
        "label-count",
        "bad-label",
        "rgb8-mask",
        "mask-size",
        "empty-mask",
    ],
)
def test_bad_prompts_get_a_clear_error_and_the_node_keeps_serving(ros, prompt, message) -> None:
    _, tester = ros
    image, truth = shapes_scene()
    request = SegmentAndDescribe.Request(image=numpy_to_image(image, "rgb8", header=next_header()))
    request.prompts = [prompt]
    response = tester.call(request)
    assert not response.success and response.masks == []
    assert re.search(message, response.message), response.message
    ok = SegmentAndDescribe.Request(image=request.image, prompts=[RegionPrompt(points=[centre(truth[0])])])
    assert tester.call(ok).success


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({}, "no prompt: send clicks or boxes in prompts, or set everything"),
        ({"everything": True, "prompts": [RegionPrompt(points=[Point(x=5.0, y=5.0)])]}, "both prompts and everything"),
        ({"everything": True, "stamp": Time(sec=1, nanosec=0)}, "no image in the request and no cached frame near"),
    ],
    ids=["nothing-asked", "both-asked", "no-frame"],
)
def test_malformed_requests_are_refused(ros, request_fields, message) -> None:
    _, tester = ros
    response = tester.call(SegmentAndDescribe.Request(**request_fields))
    assert not response.success and message in response.message, response.message


def test_a_prompt_mask_alone_is_accepted(ros) -> None:
    _, tester = ros
    image, truth = shapes_scene()
    request = SegmentAndDescribe.Request(image=numpy_to_image(image, "rgb8", header=next_header()))
    request.prompts = [RegionPrompt(mask=mono8(truth[1])), RegionPrompt(points=[centre(truth[0])])]
    response = tester.call(request)
    assert response.success, response.message
    assert len(response.masks) == len(response.answers) == 2  # a mask-only prompt beside a click, in order
    assert iou(image_to_numpy(response.masks[1]) > 0, truth[0]) > 0.7


def test_without_sam_the_service_says_so_and_everything_mode_cannot_start(tiny_dir: Path, tmp_path: Path) -> None:
    domain = domain_id(63)
    (tmp_path / "a").mkdir()
    node = NodeProcess(tmp_path / "a", domain, {"model_dir": str(tiny_dir), "sam_preset": "none"}, {})
    tester = RosTester(domain, "/camera/image_raw", "/camera/region_masks")  # the launch defaults
    try:
        node.wait_for_log(r"ready: model", timeout=120)
        tester.wait_for_node()
        image, _ = shapes_scene()
        response = tester.call(
            SegmentAndDescribe.Request(image=numpy_to_image(image, "rgb8", header=next_header()), everything=True)
        )
        assert not response.success and "SAM is not loaded (sam_preset is none)" in response.message
    finally:
        tester.close()
        node.stop()

    (tmp_path / "b").mkdir()
    params = tmp_path / "b" / "params.yaml"
    params.write_text(
        "/**/osprey_perception:\n  ros__parameters:\n"
        f"    model_dir: '{tiny_dir}'\n    sam_preset: none\n    mask_source: everything\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "osprey_ros.launcher", f"params_file:={params}"],
        env=ros_env(domain),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    fatal = [line for line in output.splitlines() if "FATAL" in line]
    assert len(fatal) == 1 and "mask_source everything needs SAM" in fatal[0], output


def test_without_lisa_reason_segment_says_it_is_not_loaded(ros) -> None:
    from osprey_interfaces.srv import ReasonSegment

    _, tester = ros
    image, _ = shapes_scene()
    response = tester.call(
        ReasonSegment.Request(image=numpy_to_image(image, "rgb8", header=next_header()), query="Where is the cup?")
    )
    assert not response.success
    assert response.message == "LISA is not loaded: set lisa_model_dir (and lisa_clip_dir) and reconfigure the node"
