"""``osprey-bag IN OUT``: a recorded rosbag2 (mcap or sqlite3) described offline, at full speed, without a
ROS graph.

The node's own frame path runs on the bag's messages: images and masks paired by stamp (the same
``ApproximateTimeSync``, on bag time), or SAM's everything mode with ``--everything``; stable ids and
description reuse (``RegionTracker``); 3D positions from ``--depth-topic`` and ``--camera-info-topic``.
``OUT`` is a new bag (mcap) with ``/osprey_perception/descriptions`` and, with depth, ``/osprey_perception/
markers``, stamped with the camera frames' stamps; ``OUT.jsonl`` holds one line per described frame.

rosbags reads and writes the bag files; the messages are rclpy's (CDR bytes in and out, which rosbags and
rclpy agree on), so the node's conversion and message code is used unchanged. Defaults are the node's
parameters (``config/perception.yaml``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rclpy.serialization import deserialize_message, serialize_message
from tqdm import tqdm

from osprey_model import FrameFeatures, OspreyPredictor
from osprey_model.embedded import default_checkpoint, default_sam_checkpoint

from .depth_input import DepthInput
from .description_messages import description_record, descriptions_msg, markers_msg
from .image_conversion import ImageConversionError, compressed_to_rgb, image_to_rgb, mask_to_bool
from .parameters import SPECS
from .region_describer import RegionDescriber
from .region_tracker import RegionTracker, TrackerConfig, TrackerStats, describe_tracked, mask_classes
from .stamps import stamp_ns
from .sync import ApproximateTimeSync

DESCRIPTIONS_TOPIC, MARKERS_TOPIC = "/osprey_perception/descriptions", "/osprey_perception/markers"
MSG_DIR = Path(__file__).resolve().parents[1] / "msg"


def default(name: str) -> Any:
    return SPECS[name].default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="osprey-bag", description=__doc__.splitlines()[0])
    parser.add_argument("bag_in", type=Path, help="rosbag2 folder (or .mcap / .db3 file's folder)")
    parser.add_argument("bag_out", type=Path, help="new bag folder to write (must not exist)")
    parser.add_argument(
        "--image-topic", default="", help="sensor_msgs Image or CompressedImage (default: the only one)"
    )
    parser.add_argument("--masks-topic", default="", help="osprey_interfaces RegionMasks (default: the only one)")
    parser.add_argument("--everything", action="store_true", help="no mask topic: the embedded tiny SAM segments")
    parser.add_argument("--depth-topic", default="", help="aligned depth (16UC1 / 32FC1): 3D positions, markers")
    parser.add_argument("--camera-info-topic", default="", help="CameraInfo of the image (needed with depth)")
    parser.add_argument("--model", default="", help="Osprey checkpoint folder (default: the embedded one)")
    parser.add_argument("--prompt-mode", default=default("prompt_mode"), choices=SPECS["prompt_mode"].choices)
    parser.add_argument("--attributes", nargs="*", default=default("attributes"))
    parser.add_argument("--max-new-tokens", type=int, default=default("max_new_tokens"))
    parser.add_argument("--max-regions", type=int, default=default("max_regions"))
    parser.add_argument("--slop", type=float, default=default("slop"))
    parser.add_argument("--reuse-iou", type=float, default=default("reuse_iou"))
    parser.add_argument("--reuse-max-age", type=int, default=default("reuse_max_age"))
    parser.add_argument("--jsonl", type=Path, default=None, help="default: OUT.jsonl")
    return parser.parse_args(argv)


def message_class(msgtype: str) -> Any:
    """'sensor_msgs/msg/Image' → rclpy's class."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def output_typestore() -> Any:
    """ROS 2 Kilted's types plus ours (for the output connections' definitions)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for path in sorted(MSG_DIR.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"osprey_interfaces/msg/{path.stem}"))
    store.register(types)
    return store


@dataclass
class BagStats:
    messages: int = 0
    frames: int = 0
    regions: int = 0
    frame_errors: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class BagDescriber:
    """The node's frame path on bag messages; ``emit`` receives each frame's descriptions (and markers)."""

    def __init__(self, args: argparse.Namespace, describer: RegionDescriber, model_name: str, emit) -> None:
        self.args, self.describer, self.model_name, self.emit = args, describer, model_name, emit
        self.bag_time_s = 0.0
        self.sync: ApproximateTimeSync = ApproximateTimeSync(args.slop, 30, 1.0, clock=lambda: self.bag_time_s)
        self.depth = DepthInput(60, args.slop, default("depth_percentiles"), default("depth_min_pixels"))
        self.use_depth = bool(args.depth_topic)
        self.tracker = RegionTracker(
            TrackerConfig(default("track_iou"), args.reuse_iou, args.reuse_max_age, default("track_max_missed"))
        )
        self.segmenter = None
        if args.everything:
            from osprey_model.sam import AutomaticMaskConfig, SamSegmenter, get_sam_preset

            from .region_segmenter import RegionSegmenter

            sam = SamSegmenter.from_pretrained("tiny", default_sam_checkpoint())
            config = AutomaticMaskConfig.recommended(get_sam_preset("tiny"), max_masks=args.max_regions)
            self.segmenter = RegionSegmenter(sam, config)
        self.pending: list[tuple[int, Any, Any]] = []  # paired frames waiting for their depth (bag order)
        self.stats = BagStats()

    def on_message(self, topic: str, msg: Any, bag_time_ns: int) -> None:
        self.bag_time_s = bag_time_ns / 1e9
        args = self.args
        if topic == args.image_topic:
            stamp = stamp_ns(msg.header.stamp)
            if self.segmenter is not None:
                self.pending.append((stamp, msg, None))
            else:
                self.pending += [(stamp_ns(i.header.stamp), i, m) for i, m in self.sync.add_image(stamp, msg)]
        elif topic == args.masks_topic:
            pairs = self.sync.add_masks(stamp_ns(msg.header.stamp), msg)
            self.pending += [(stamp_ns(i.header.stamp), i, m) for i, m in pairs]
        elif topic == args.depth_topic:
            self.depth.add_depth(stamp_ns(msg.header.stamp), msg)
        elif topic == args.camera_info_topic:
            self.depth.add_camera_info(stamp_ns(msg.header.stamp), msg)
        self.flush(bag_time_ns - self.sync.slop_ns)

    def flush(self, before_ns: int | None = None) -> None:
        """Describe the paired frames whose depth can no longer arrive (recorded after the image, within
        slop); all of them at the end of the bag."""
        ready: list[tuple[int, Any, Any]] = []
        waiting: list[tuple[int, Any, Any]] = []
        for pair in self.pending:
            (ready if before_ns is None or pair[0] < before_ns else waiting).append(pair)
        self.pending = waiting
        for stamp, image, masks in sorted(ready, key=lambda p: p[0]):
            self.describe_frame(stamp, image, masks)

    def describe_frame(self, stamp: int, image_msg: Any, masks_msg: Any) -> None:
        start = time.perf_counter()
        where = f"frame {stamp / 1e9:.3f}"
        try:
            rgb = image_to_rgb(image_msg) if hasattr(image_msg, "encoding") else compressed_to_rgb(image_msg)
            frame = FrameFeatures(rgb)
            if masks_msg is None:
                assert self.segmenter is not None
                masks, given_ids, classes = list(self.segmenter.everything(frame).masks), None, None
            else:
                if masks_msg.ids and len(masks_msg.ids) != len(masks_msg.masks):
                    raise ValueError(f"{len(masks_msg.ids)} ids for {len(masks_msg.masks)} masks")
                masks = [mask_to_bool(m, i) for i, m in enumerate(masks_msg.masks)][: self.args.max_regions]
                given_ids = list(masks_msg.ids)[: len(masks)] or None
                classes = mask_classes(list(masks_msg.classes), len(masks_msg.masks), len(masks))
            describe = partial(self.describer.describe, frame)
            regions = describe_tracked(self.tracker, describe, masks, rgb.shape[:2], given_ids, classes)
            positions = None
            if self.use_depth and masks:
                positions = self.depth.positions(stamp, masks)
        except (ImageConversionError, ValueError) as exc:
            self.stats.frame_errors += 1
            self.stats.errors.append(f"{where}: {exc}")
            print(f"osprey-bag: {where}: {exc}", file=sys.stderr)
            return
        descriptions = descriptions_msg(
            image_msg.header, self.model_name, regions, time.perf_counter() - start, positions
        )
        self.stats.frames += 1
        self.stats.regions += len(regions)
        self.emit(stamp, descriptions, markers_msg(descriptions) if self.use_depth else None)


def pick_topic(
    connections: list[Any], wanted: str, types: tuple[str, ...], what: str, exclude: frozenset[str] = frozenset()
) -> str:
    """The named topic (which must be there), else the bag's only one of ``types`` not in ``exclude``."""
    if wanted:
        if not any(c.topic == wanted for c in connections):
            raise SystemExit(
                f"osprey-bag: no topic {wanted} in the bag; it has {sorted({c.topic for c in connections})}"
            )
        return wanted
    found = sorted({c.topic for c in connections if c.msgtype in types} - exclude)
    if len(found) == 1:
        return found[0]
    raise SystemExit(f"osprey-bag: {len(found)} {what} topics in the bag ({found}): name one with --{what}-topic")


def run(args: argparse.Namespace) -> tuple[BagStats, TrackerStats]:
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    if args.bag_out.exists():
        raise SystemExit(f"osprey-bag: {args.bag_out} exists: give a new folder")
    jsonl_path = args.jsonl or args.bag_out.with_name(args.bag_out.name + ".jsonl")
    model_dir = Path(args.model) if args.model else default_checkpoint()
    predictor = OspreyPredictor.from_pretrained(model_dir)
    attributes = tuple(a for a in args.attributes if a != "none")
    describer = RegionDescriber(predictor, args.prompt_mode, args.max_new_tokens, attributes)
    store = output_typestore()
    with Reader(args.bag_in) as reader, Writer(args.bag_out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = list(reader.connections)
        images = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
        depth = frozenset({args.depth_topic} - {""})
        args.image_topic = pick_topic(connections, args.image_topic, images, "image", exclude=depth)
        if not args.everything:
            args.masks_topic = pick_topic(
                connections, args.masks_topic, ("osprey_interfaces/msg/RegionMasks",), "masks"
            )
        used = {args.image_topic, args.masks_topic, args.depth_topic, args.camera_info_topic} - {""}
        described_out = writer.add_connection(
            DESCRIPTIONS_TOPIC, "osprey_interfaces/msg/RegionDescriptionArray", typestore=store
        )
        markers_out = (
            writer.add_connection(MARKERS_TOPIC, "visualization_msgs/msg/MarkerArray", typestore=store)
            if args.depth_topic
            else None
        )
        with jsonl_path.open("w") as jsonl:

            def emit(stamp: int, descriptions: Any, markers: Any) -> None:
                writer.write(described_out, stamp, serialize_message(descriptions))
                if markers_out is not None and markers is not None:
                    writer.write(markers_out, stamp, serialize_message(markers))
                jsonl.write(json.dumps(description_record(descriptions)) + "\n")

            bag = BagDescriber(args, describer, model_dir.name, emit)
            selected = [c for c in connections if c.topic in used]
            classes = {c.id: message_class(c.msgtype) for c in selected}
            start = time.perf_counter()
            total = sum(c.msgcount for c in selected)
            for connection, bag_time, raw in tqdm(reader.messages(selected), total=total, unit="msg", file=sys.stderr):
                bag.stats.messages += 1
                bag.on_message(connection.topic, deserialize_message(raw, classes[connection.id]), bag_time)
            bag.flush()
            bag.stats.seconds = time.perf_counter() - start
    stats = bag.stats
    print(
        f"osprey-bag: {stats.frames} frames, {stats.regions} regions described in {stats.seconds:.1f} s "
        f"({stats.frames / max(stats.seconds, 1e-9):.1f} frames/s); {bag.tracker.stats.reused} regions reused, "
        f"{bag.tracker.stats.described} described; {stats.frame_errors} frame errors, "
        f"{bag.sync.stats.masks_unmatched} mask sets without an image; wrote {args.bag_out} and {jsonl_path}"
    )
    return stats, bag.tracker.stats


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
