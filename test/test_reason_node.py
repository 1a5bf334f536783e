"""LISA in the node, over real rclpy: ~/reason_segment answers, masks, Osprey's descriptions, bad queries.

The LISA checkpoint is a tiny one in the released layout written here, wired to answer "Sure, [SEG]." (see
``osprey_model.lisa.tiny``): the masks come from its untrained head and SAM, so the tests check the
plumbing, the counts and the shapes, not what is segmented.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from osprey_interfaces.srv import ReasonSegment
from ros_harness import NodeProcess, RosTester, domain_id
from std_msgs.msg import Header

from osprey_model.lisa.tiny import create_tiny_lisa
from osprey_model.shapes import Shape, render
from osprey_ros.image_conversion import image_to_numpy, numpy_to_image

IMAGE_TOPIC, MASKS_TOPIC = "/cam/image", "/cam/region_masks"
WIDTH, HEIGHT = 320, 240
_stamps = itertools.count(9000)


def next_header() -> Header:
    return Header(stamp=Time(sec=next(_stamps), nanosec=0), frame_id="cam")


def picture() -> np.ndarray:
    image, _ = render([Shape("circle", "red", 100, 100, 50), Shape("square", "blue", 220, 150, 45)], WIDTH, HEIGHT)
    return image


@pytest.fixture(scope="module")
def ros(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    lisa_dir, _ = create_tiny_lisa(tmp_path_factory.mktemp("lisa"), answer_chain=["▁Sure", ",", "[SEG]", ".", "</s>"])
    domain = domain_id(67)
    parameters = {
        "model_dir": str(tiny_dir),
        "lisa_model_dir": str(lisa_dir),  # its CLIP folder lies beside it, as config.json names it
        "sam_preset": "none",
        "max_new_tokens": 3,
        "diagnostics_period": 0.2,
        "cpu_threads": 1,
        "cache_size": 4,
    }
    node = NodeProcess(
        tmp_path_factory.mktemp("node"), domain, parameters, {"image_topic": IMAGE_TOPIC, "masks_topic": MASKS_TOPIC}
    )
    tester = RosTester(domain, IMAGE_TOPIC, MASKS_TOPIC)
    try:
        node.wait_for_log(r"ready: model", timeout=120)
        assert "LISA LISA-tiny" in node.log()
        tester.wait_for_node()
        yield node, tester
    finally:
        tester.close()
        node.stop()


def request(query: str, **fields) -> ReasonSegment.Request:
    image = numpy_to_image(picture(), "rgb8", header=next_header())
    return ReasonSegment.Request(image=image, query=query, **fields)


def test_a_query_gives_the_answer_a_mask_per_seg_and_osprey_describes_it(ros) -> None:
    _, tester = ros
    asked = request("Where can I put this cup? Please output segmentation mask.", describe=True)
    response = tester.call(asked)
    assert response.success, response.message
    assert response.answer == "Sure, [SEG]." and response.stamp == asked.image.header.stamp
    assert len(response.masks) == len(response.scores) == len(response.boxes) == len(response.descriptions) == 1
    mask = image_to_numpy(response.masks[0])
    assert response.masks[0].encoding == "mono8" and mask.shape == (HEIGHT, WIDTH)
    box = response.boxes[0]
    if mask.any():  # the untrained head's mask may be empty: then the reply says so instead
        assert response.descriptions[0] and response.message == ""  # Osprey's words for LISA's mask
        ys, xs = np.nonzero(mask)
        assert (box.x_offset, box.y_offset) == (xs.min(), ys.min())
        assert (box.width, box.height) == (np.ptp(xs) + 1, np.ptp(ys) + 1)
    else:
        assert response.descriptions == [""] and "SAM found nothing for [SEG] 0" in response.message
        assert (box.width, box.height) == (0, 0)
    tester.spin_until(lambda: any(m.header.stamp == asked.image.header.stamp for m in tester.reason_masks), 10, "")
    published = next(m for m in tester.reason_masks if m.header.stamp == asked.image.header.stamp)
    assert len(published.masks) == 1 and published.ids.tolist() == [0]

    plain = tester.call(request("Where is the red circle?"))
    assert plain.success and plain.descriptions == [] and len(plain.masks) == 1


def test_a_request_never_gets_more_tokens_than_the_node_allows(ros) -> None:
    _, tester = ros
    # Uncapped, 4e9 tokens would not fit the context and the request would fail; capped at the node's
    # lisa_max_new_tokens (64) it is answered (the wired answer ends after 5 tokens).
    response = tester.call(request("Where is it?", max_new_tokens=4_000_000_000))
    assert response.success, response.message
    assert response.answer == "Sure, [SEG]."


def test_an_answer_without_seg_is_success_with_no_mask_and_says_so(ros) -> None:
    _, tester = ros
    response = tester.call(request("Where is the red circle?", max_new_tokens=2))  # the answer stops at "Sure,"
    assert response.success and response.answer == "Sure," and response.masks == []
    assert response.message == "no [SEG] in the answer: no mask"


def test_a_cached_camera_frame_is_used_by_stamp(ros) -> None:
    _, tester = ros
    header = next_header()
    response = None
    for _ in range(20):  # best-effort camera input: a frame sent while the match settles may be lost, resend
        tester.image_pub.publish(numpy_to_image(picture(), "rgb8", header=header))
        tester.executor.spin_once(timeout_sec=0.2)
        response = tester.call(ReasonSegment.Request(stamp=header.stamp, query="Where is it?"))
        if response.success:
            break
    assert response is not None and response.success, response.message
    assert response.stamp == header.stamp and len(response.masks) == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"query": "   "}, "empty query"),
        ({"query": "segment <image> for me"}, "may not contain <image>"),
        ({"query": "where " * 900}, "at most 4000 are read"),
        ({"query": "where is it " * 200}, "at most 512 are read"),
        ({"query": "Where is it?", "image_stamp": Time(sec=1)}, "no image in the request and no cached frame near"),
    ],
    ids=["empty", "image-token", "too-many-characters", "too-many-tokens", "no-frame"],
)
def test_bad_queries_get_a_clear_error_and_the_node_keeps_serving(ros, fields: dict, message: str) -> None:
    _, tester = ros
    if "image_stamp" in fields:
        asked = ReasonSegment.Request(stamp=fields["image_stamp"], query=fields["query"])
    else:
        asked = request(fields["query"])
    response = tester.call(asked)
    assert not response.success and message in response.message, response.message
    assert tester.call(request("Where is it?")).success
