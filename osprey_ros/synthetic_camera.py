"""``synthetic_camera``: a camera for demos and tests — moving, overlapping shapes and their masks.

Publishes ``image`` (rgb8) and, unless ``publish_masks`` is false, ``region_masks`` (one mono8 mask per
visible shape) with the same stamp. Without masks it is the camera of the node's ``everything`` mode,
where SAM finds the shapes; the ground truth is kept either way (``truth``) for demos and tests.

A shape keeps its id (its index in the scene) for as long as the camera has it, hidden frames included:
a tracker downstream sees the same id come back. With ``publish_depth`` the camera is an RGB-D one: each
shape is a flat card facing the camera, later-drawn (on top) shapes nearer, in front of a wall; ``depth``
(16UC1 millimetres or 32FC1 metres, aligned to the image; the left ``INVALID_COLUMNS`` columns have no
return, as a stereo camera's) and ``camera_info`` (a pinhole, no distortion) carry the image's stamp.
"""

from __future__ import annotations

import copy
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from osprey_interfaces.msg import RegionMasks
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from osprey_model.shapes import Shape, random_shapes, render

from .depth import PinholeCamera
from .image_conversion import numpy_to_image

WALL_DEPTH = 3.0  # metres
NEAREST_DEPTH, DEPTH_STEP = 1.2, 0.3  # the top shape's depth; each one below it is this much farther
INVALID_COLUMNS = 4


def synthetic_pinhole(width: int, height: int) -> PinholeCamera:
    """A ~64° horizontal field of view, centred."""
    focal = 0.8 * width
    return PinholeCamera(focal, focal, (width - 1) / 2, (height - 1) / 2, width, height)


class ShapesScene:
    """Shapes drifting and bouncing off the borders; deterministic for a seed."""

    def __init__(self, width: int, height: int, count: int, seed: int, speed: float = 1.0) -> None:
        """``speed`` scales the drift (up to 4 px and 0.03 rad a frame at 1)."""
        self.width, self.height, self.speed = width, height, speed
        self.rng = np.random.default_rng(seed)
        self.shapes: list[Shape] = random_shapes(self.rng, width, height, count, overlap=0.15, distinct_colours=True)
        self.velocity = self.rng.uniform(-4, 4, size=(len(self.shapes), 2)) * speed  # distinct colours: at most 6

    def shape_depth(self, index: int) -> float:
        """Metres from the camera to shape ``index``'s card (later shapes are drawn on top: nearer)."""
        return NEAREST_DEPTH + DEPTH_STEP * (len(self.shapes) - 1 - index)

    def depth_image(self, masks: list[np.ndarray], ids: list[int]) -> np.ndarray:
        """(H, W) float32 metres for the visible ``masks`` of shapes ``ids``; NaN where there is no return."""
        depth = np.full((self.height, self.width), WALL_DEPTH, np.float32)
        for mask, index in zip(masks, ids, strict=True):
            depth[mask] = self.shape_depth(index)
        depth[:, :INVALID_COLUMNS] = np.nan
        return depth

    def step(self) -> tuple[np.ndarray, list[np.ndarray], list[Shape], list[int]]:
        for shape, v in zip(self.shapes, self.velocity, strict=True):
            shape.x, shape.y = shape.x + v[0], shape.y + v[1]
            if not shape.size * 0.5 < shape.x < self.width - shape.size * 0.5:
                v[0] = -v[0]
            if not shape.size * 0.5 < shape.y < self.height - shape.size * 0.5:
                v[1] = -v[1]
            shape.angle += 0.03 * self.speed
        image, masks = render(self.shapes, self.width, self.height, self.rng)
        keep = [i for i, mask in enumerate(masks) if mask.sum() >= 30]  # hidden shapes have no region
        return image, [masks[i] for i in keep], [self.shapes[i] for i in keep], keep


@dataclass
class TruthFrame:
    """What the camera drew for one stamp: each visible shape and its visible mask."""

    shapes: list[Shape]
    masks: list[np.ndarray]
    ids: list[int]  # each shape's stable id (its index in the scene)
    centres: list[tuple[float, float, float]]  # each card's centre in the optical frame, metres (depth on)


class SyntheticCamera(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("synthetic_camera", **kwargs)
        rate = float(self.declare_parameter("rate", 2.0).value)
        width = int(self.declare_parameter("width", 320).value)
        height = int(self.declare_parameter("height", 240).value)
        count = int(self.declare_parameter("shapes", 4).value)
        seed = int(self.declare_parameter("seed", 0).value)
        speed = float(self.declare_parameter("speed", 1.0).value)
        self.publish_masks = bool(self.declare_parameter("publish_masks", True).value)
        self.frame_id = str(self.declare_parameter("frame_id", "synthetic_camera").value)
        self.publish_depth = bool(self.declare_parameter("publish_depth", True).value)
        self.depth_encoding = str(self.declare_parameter("depth_encoding", "16UC1").value)
        if self.depth_encoding not in ("16UC1", "32FC1"):
            raise ValueError(f"depth_encoding {self.depth_encoding!r}: 16UC1 or 32FC1")
        self.camera = synthetic_pinhole(width, height)
        self.scene = ShapesScene(width, height, count, seed, speed)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(Image, "image", qos)
        self.masks_pub = self.create_publisher(RegionMasks, "region_masks", qos) if self.publish_masks else None
        self.depth_pub = self.create_publisher(Image, "depth", qos) if self.publish_depth else None
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos) if self.publish_depth else None
        self.truth: dict[int, TruthFrame] = {}  # stamp → what was drawn, for ground truth beside answers
        self.create_timer(1.0 / rate, self.publish_frame)

    def publish_frame(self) -> None:
        image, masks, shapes, ids = self.scene.step()
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        centres = [self.card_centre(shape, index) for shape, index in zip(shapes, ids, strict=True)]
        self.truth[stamp] = TruthFrame([copy.copy(shape) for shape in shapes], masks, ids, centres)
        while len(self.truth) > 30:
            self.truth.pop(next(iter(self.truth)))
        self.image_pub.publish(numpy_to_image(image, "rgb8", header=header))
        if self.depth_pub is not None and self.info_pub is not None:
            self.depth_pub.publish(self.depth_msg(self.scene.depth_image(masks, ids), header))
            self.info_pub.publish(self.camera.to_camera_info(header))
        if self.masks_pub is not None:
            msg = RegionMasks(header=header, ids=ids)
            msg.masks = [numpy_to_image(mask.astype(np.uint8) * 255, "mono8", header=header) for mask in masks]
            self.masks_pub.publish(msg)

    def card_centre(self, shape: Shape, index: int) -> tuple[float, float, float]:
        z = self.scene.shape_depth(index)
        camera = self.camera
        return ((shape.x - camera.cx) * z / camera.fx, (shape.y - camera.cy) * z / camera.fy, z)

    def depth_msg(self, metres: np.ndarray, header: Header) -> Image:
        if self.depth_encoding == "32FC1":
            return numpy_to_image(metres.astype(np.float32), "32FC1", header=header)
        millimetres = np.nan_to_num(metres * 1000.0, nan=0.0).round().astype(np.uint16)  # 0 = no return
        return numpy_to_image(millimetres, "16UC1", header=header)


def record_bag(
    path: Path,
    frames: int,
    width: int = 640,
    height: int = 480,
    shapes: int = 4,
    speed: float = 1.0,
    seed: int = 4,
    storage: str = "mcap",
    extra_topic: bool = False,
) -> list[list[int]]:
    """A rosbag2 of the RGB-D camera without a ROS graph: ``/cam/image``, ``/cam/region_masks`` (stable ids),
    ``/cam/camera_info`` and ``/cam/depth`` (16UC1, recorded after its image, as a driver's may arrive), one
    frame a second of bag time; ``extra_topic`` adds an unrelated String topic. Returns each frame's ids."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer

    from .bag_tool import output_typestore

    store = output_typestore()
    scene = ShapesScene(width, height, shapes, seed, speed)
    camera = synthetic_pinhole(width, height)
    topics = {
        "/cam/image": "sensor_msgs/msg/Image",
        "/cam/region_masks": "osprey_interfaces/msg/RegionMasks",
        "/cam/camera_info": "sensor_msgs/msg/CameraInfo",
        "/cam/depth": "sensor_msgs/msg/Image",
    }
    if extra_topic:
        topics["/unrelated"] = "std_msgs/msg/String"
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    ids_per_frame = []
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        out = {topic: writer.add_connection(topic, kind, typestore=store) for topic, kind in topics.items()}
        for i in range(frames):
            image, masks, _, ids = scene.step()
            ids_per_frame.append(ids)
            stamp = 1_000_000_000 * (100 + i)
            header = Header(stamp=Time(sec=100 + i), frame_id="cam_optical")
            region_masks = RegionMasks(header=header, ids=ids)
            region_masks.masks = [numpy_to_image(m.astype(np.uint8) * 255, "mono8", header=header) for m in masks]
            millimetres = np.nan_to_num(scene.depth_image(masks, ids) * 1000).astype(np.uint16)
            messages = [
                ("/cam/image", numpy_to_image(image, "rgb8", header=header)),
                ("/cam/region_masks", region_masks),
                ("/cam/camera_info", camera.to_camera_info(header)),
                ("/cam/depth", numpy_to_image(millimetres, "16UC1", header=header)),
            ]
            for offset, (topic, msg) in enumerate(messages):
                writer.write(out[topic], stamp + offset * 1_000_000, serialize_message(msg))
    return ids_per_frame


def main(args: list[str] | None = None) -> None:
    """Ctrl-C ends it with exit code 0 and no traceback, whenever it comes: while it starts (the signal is
    held back until rclpy's handler is in place), while the node is built (the signal shuts the context down
    under it: RCLError) or while it spins.

    Held back from the first line: a KeyboardInterrupt raised inside code that runs through ``exec`` of a
    string (``dataclasses`` builds its methods so, and the launcher's import defines dataclasses) marks the
    interrupt unhandled in CPython 3.11 even once caught, and ``python -c``/``-m`` then exit by SIGINT.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        try:
            from .launcher import use_large_data_profile

            use_large_data_profile()  # camera-size images need the large shared-memory segment on the sender
            rclpy.init(args=args)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        rclpy.spin(SyntheticCamera())
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        if rclpy.ok():  # a real failure, not a Ctrl-C that shut the context down during start-up
            raise
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
