"""``osprey-bag`` on a bag the test records (the RGB-D synthetic camera's frames, masks with stable ids,
depth and camera info, in bag order with depth after its image): descriptions, markers and JSONL out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from osprey_interfaces.msg import RegionDescriptionArray
from rclpy.serialization import deserialize_message
from visualization_msgs.msg import MarkerArray

from osprey_ros.bag_tool import DESCRIPTIONS_TOPIC, MARKERS_TOPIC, main
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
