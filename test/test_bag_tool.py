"""``osprey-bag`` on a bag the test records (the RGB-D synthetic camera's frames, masks with stable ids,
depth and camera info, in bag order with depth after its image): descriptions, markers and JSONL out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from osprey_interfaces.msg import RegionDescriptionArray, RegionMasks
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from osprey_ros.bag_tool import DESCRIPTIONS_TOPIC, MARKERS_TOPIC, main, parse_args, run
from osprey_ros.image_conversion import numpy_to_image
from osprey_ros.synthetic_camera import record_bag

FRAMES = 6


def record(path: Path, storage: str, frames: int = FRAMES) -> list[list[int]]:
    return record_bag(path, frames, 160, 120, shapes=3, speed=0.2, storage=storage, extra_topic=True)


def read(path: Path) -> dict[str, list]:
    from rosbags.rosbag2 import Reader

    classes = {DESCRIPTIONS_TOPIC: RegionDescriptionArray, MARKERS_TOPIC: MarkerArray}
    out: dict[str, list] = {topic: [] for topic in classes}
    with Reader(path) as reader:
        for connection, _, raw in reader.messages():
            out[connection.topic].append(deserialize_message(raw, classes[connection.topic]))
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_in_descriptions_markers_and_jsonl_out(tmp_path: Path, storage: str, capsys) -> None:
    ids = record(tmp_path / "in", storage)
    main([str(tmp_path / "in"), str(tmp_path / "out"), "--depth-topic", "/cam/depth",
          "--camera-info-topic", "/cam/camera_info", "--max-new-tokens", "4"])  # fmt: skip
    written = read(tmp_path / "out")
    described = written[DESCRIPTIONS_TOPIC]
    assert len(described) == FRAMES and [d.header.stamp.sec for d in described] == list(range(100, 100 + FRAMES))
    assert [[r.id for r in d.regions] for d in described] == ids  # the recorded ids are kept
    assert all(r.has_position and r.position.z > 1.0 for d in described for r in d.regions)  # depth came late
    assert any(r.reused for d in described for r in d.regions)  # a slow scene: text reused
    assert all(r.category and r.colour for d in described for r in d.regions)
    assert len(written[MARKERS_TOPIC]) == FRAMES
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [[r["id"] for r in line["regions"]] for line in lines] == ids
    assert lines[0]["regions"][0]["position"][2] == pytest.approx(described[0].regions[0].position.z)
    assert f"osprey-bag: {FRAMES} frames" in capsys.readouterr().out


def test_an_existing_output_or_an_ambiguous_topic_is_refused(tmp_path: Path) -> None:
    record(tmp_path / "in", "mcap", frames=1)
    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit, match="exists: give a new folder"):
        main([str(tmp_path / "in"), str(tmp_path / "out")])
    with pytest.raises(SystemExit, match=r"2 image topics in the bag \(\['/cam/depth', '/cam/image'\]\)"):
        main([str(tmp_path / "in"), str(tmp_path / "out2")])
    with pytest.raises(SystemExit, match="no topic /nope in the bag"):
        main([str(tmp_path / "in"), str(tmp_path / "out3"), "--image-topic", "/nope"])


def test_everything_mode_needs_no_mask_topic(tmp_path: Path, capsys) -> None:
    record(tmp_path / "in", "mcap", frames=2)
    main([str(tmp_path / "in"), str(tmp_path / "out"), "--image-topic", "/cam/image", "--everything",
          "--max-new-tokens", "3"])  # fmt: skip
    described = read(tmp_path / "out")[DESCRIPTIONS_TOPIC]
    assert len(described) == 2 and all(d.regions for d in described)  # the tiny SAM found the shapes
    assert not read(tmp_path / "out")[MARKERS_TOPIC]  # no depth asked: no markers
    assert "osprey-bag: 2 frames" in capsys.readouterr().out


def test_a_bad_frame_in_the_bag_is_said_and_skipped_and_the_rest_described(tmp_path: Path, capsys) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from osprey_model.shapes import Shape, render
    from osprey_ros.bag_tool import output_typestore

    store = output_typestore()
    image, masks = render([Shape("circle", "red", 40, 30, 15), Shape("square", "blue", 90, 50, 15)], 128, 96)
    with Writer(tmp_path / "in", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        image_out = writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=store)
        masks_out = writer.add_connection("/cam/region_masks", "osprey_interfaces/msg/RegionMasks", typestore=store)
        for i in range(3):
            header = Header(stamp=Time(sec=10 + i), frame_id="cam")
            sent = [masks[0], np.zeros_like(masks[1])] if i == 1 else masks  # frame 2: an empty mask
            region_masks = RegionMasks(header=header, classes=["circle", "square"])
            region_masks.masks = [numpy_to_image(m.astype(np.uint8) * 255, "mono8", header=header) for m in sent]
            writer.write(image_out, (10 + i) * 10**9, serialize_message(numpy_to_image(image, "rgb8", header=header)))
            writer.write(masks_out, (10 + i) * 10**9 + 1, serialize_message(region_masks))
    stats, _ = run(parse_args([str(tmp_path / "in"), str(tmp_path / "out"), "--max-new-tokens", "3"]))
    assert stats.frames == 2 and stats.frame_errors == 1
    assert "frame 11.000: mask 1 is empty" in capsys.readouterr().err
    described = read(tmp_path / "out")[DESCRIPTIONS_TOPIC]
    assert [d.header.stamp.sec for d in described] == [10, 12]
    assert [r.id for r in described[0].regions] == [r.id for r in described[1].regions]  # tracked, same class
