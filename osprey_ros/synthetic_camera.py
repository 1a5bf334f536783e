"""``synthetic_camera``: a camera for demos and tests — moving, overlapping shapes and their masks.

Publishes ``image`` (rgb8) and, unless ``publish_masks`` is false, ``region_masks`` (one mono8 mask per
visible shape) with the same stamp. Without masks it is the camera of the node's ``everything`` mode,
where SAM finds the shapes; the ground truth is kept either way (``truth``) for demos and tests.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import rclpy
from osprey_interfaces.msg import RegionMasks
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from osprey_model.shapes import Shape, random_shapes, render

from .image_conversion import numpy_to_image


class ShapesScene:
    """Shapes drifting and bouncing off the borders; deterministic for a seed."""

    def __init__(self, width: int, height: int, count: int, seed: int) -> None:
        self.width, self.height = width, height
        self.rng = np.random.default_rng(seed)
        self.shapes: list[Shape] = random_shapes(self.rng, width, height, count, overlap=0.15, distinct_colours=True)
        self.velocity = self.rng.uniform(-4, 4, size=(count, 2))

    def step(self) -> tuple[np.ndarray, list[np.ndarray], list[Shape]]:
        for shape, v in zip(self.shapes, self.velocity, strict=True):
            shape.x, shape.y = shape.x + v[0], shape.y + v[1]
            if not shape.size * 0.5 < shape.x < self.width - shape.size * 0.5:
                v[0] = -v[0]
            if not shape.size * 0.5 < shape.y < self.height - shape.size * 0.5:
                v[1] = -v[1]
            shape.angle += 0.03
        image, masks = render(self.shapes, self.width, self.height, self.rng)
        keep = [i for i, mask in enumerate(masks) if mask.sum() >= 30]  # hidden shapes have no region
        return image, [masks[i] for i in keep], [self.shapes[i] for i in keep]


@dataclass
class TruthFrame:
    """What the camera drew for one stamp: each visible shape and its visible mask."""

    shapes: list[Shape]
    masks: list[np.ndarray]


class SyntheticCamera(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("synthetic_camera", **kwargs)
        rate = float(self.declare_parameter("rate", 2.0).value)
        width = int(self.declare_parameter("width", 320).value)
        height = int(self.declare_parameter("height", 240).value)
        count = int(self.declare_parameter("shapes", 4).value)
        seed = int(self.declare_parameter("seed", 0).value)
        self.publish_masks = bool(self.declare_parameter("publish_masks", True).value)
        self.frame_id = str(self.declare_parameter("frame_id", "synthetic_camera").value)
        self.scene = ShapesScene(width, height, count, seed)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(Image, "image", qos)
        self.masks_pub = self.create_publisher(RegionMasks, "region_masks", qos) if self.publish_masks else None
        self.truth: dict[int, TruthFrame] = {}  # stamp → what was drawn, for ground truth beside answers
        self.create_timer(1.0 / rate, self.publish_frame)

    def publish_frame(self) -> None:
        image, masks, shapes = self.scene.step()
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        self.truth[stamp] = TruthFrame([copy.copy(shape) for shape in shapes], masks)
        while len(self.truth) > 30:
            self.truth.pop(next(iter(self.truth)))
        self.image_pub.publish(numpy_to_image(image, "rgb8", header=header))
        if self.masks_pub is not None:
            msg = RegionMasks(header=header, ids=list(range(len(masks))))
            msg.masks = [numpy_to_image(mask.astype(np.uint8) * 255, "mono8", header=header) for mask in masks]
            self.masks_pub.publish(msg)


def main(args: list[str] | None = None) -> None:
    """Ctrl-C ends it with exit code 0 and no traceback, whenever it comes (the signal may shut the context
    down first)."""
    try:
        from .launcher import use_large_data_profile

        use_large_data_profile()  # camera-size images need the large shared-memory segment on the sending side
        rclpy.init(args=args)
        rclpy.spin(SyntheticCamera())
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
