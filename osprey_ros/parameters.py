"""Every parameter of the perception node and every launch argument, declared in one table each.

The node declares from ``NODE_PARAMETERS``; ``config/perception.yaml`` holds the same defaults (a test
keeps them equal); ``launch/perception.launch.py`` and the ``osprey-perception`` entry point both take
``LAUNCH_ARGUMENTS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

NODE_NAME = "osprey_perception"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None

    def descriptor(self) -> ParameterDescriptor:
        text = self.description + (f" One of: {', '.join(self.choices)}." if self.choices else "")
        if self.name not in RUNTIME_PARAMETERS:
            text += " Read on configure."
        descriptor = ParameterDescriptor(name=self.name, description=text)
        if self.min_value is None or self.max_value is None:
            return descriptor
        if isinstance(self.default, int) and not isinstance(self.default, bool):
            descriptor.integer_range = [
                IntegerRange(from_value=int(self.min_value), to_value=int(self.max_value), step=1)
            ]
        elif isinstance(self.default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(self.min_value), to_value=float(self.max_value), step=0.0)
            ]
        return descriptor


# Parameters that `ros2 param set` may change while the node runs; the rest are read on configure.
RUNTIME_PARAMETERS = frozenset(
    {
        "prompt_mode",
        "max_new_tokens",
        "max_regions",
        "slop",
        "publish_overlay",
        "everything_points_per_side",
        "everything_pred_iou_thresh",
        "everything_stability_thresh",
        "everything_nms_thresh",
        "everything_min_area",
        "reuse_iou",
        "reuse_max_age",
        "attributes",
        "find_verify_top",
    }
)
# The automatic mask generator's settings (the everything mode and ~/segment_and_describe's everything).
EVERYTHING_PARAMETERS = tuple(sorted(name for name in RUNTIME_PARAMETERS if name.startswith("everything_")))

NODE_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "autostart",
        True,
        "Configure and activate at start-up (a lifecycle node); false waits for a lifecycle manager.",
    ),
    ParamSpec("model_dir", "", "Osprey checkpoint folder (config.json, weights, tokenizer); empty = embedded default."),
    ParamSpec("clip_path", "", "open_clip_pytorch_model.bin; empty = config.json's mm_vision_tower."),
    ParamSpec("device", "cpu", "Torch device for the model, e.g. cpu, cuda, cuda:1."),
    ParamSpec("dtype", "float32", "Serving dtype.", choices=("float32", "bfloat16", "float16")),
    ParamSpec(
        "cpu_threads",
        0,
        "Torch CPU threads for the model; 0 = torch's default (every core). Leave cores to the camera and DDS.",
        min_value=0,
        max_value=1024,
    ),
    ParamSpec(
        "prompt_mode",
        "short",
        "What each region gets: a short phrase, a category, or a short label plus a detailed description.",
        choices=("short", "category", "detailed"),
    ),
    ParamSpec(
        "attributes",
        ["category", "colour"],
        "Typed attributes asked of every region (one batched question each): category, colour, material, state; "
        "[none] asks none.",
        choices=("category", "colour", "material", "state", "none"),
    ),
    ParamSpec("max_new_tokens", 32, "Most tokens generated per answer.", min_value=1, max_value=1024),
    ParamSpec(
        "max_regions",
        16,
        "Most regions described per frame; extra masks are dropped, with a warning.",
        min_value=1,
        max_value=256,
    ),
    ParamSpec(
        "slop",
        0.05,
        "Seconds within which an image and a mask set count as the same frame.",
        min_value=0.0,
        max_value=10.0,
    ),
    ParamSpec(
        "sync_queue_size", 10, "Images and mask sets held while waiting for their partner.", min_value=1, max_value=1000
    ),
    ParamSpec(
        "sync_timeout",
        1.0,
        "Seconds without any camera image after which waiting mask sets are dropped and counted (a dead camera "
        "or a wrong image topic then shows in the log). While images keep coming, a mask set waits for a late "
        "image.",
        min_value=0.01,
        max_value=60.0,
    ),
    ParamSpec(
        "cache_size",
        8,
        "Recent frames whose images and encoder features are kept for ~/describe.",
        min_value=1,
        max_value=256,
    ),
    ParamSpec(
        "qos_depth", 5, "History depth of the input subscriptions and the publishers.", min_value=1, max_value=1000
    ),
    ParamSpec(
        "qos_reliability",
        "best_effort",
        "Reliability of the image and mask subscriptions (best_effort also accepts reliable publishers).",
        choices=("best_effort", "reliable"),
    ),
    ParamSpec(
        "image_transport",
        "raw",
        "Subscribe to sensor_msgs/Image on 'image' or CompressedImage on 'image/compressed'.",
        choices=("raw", "compressed"),
    ),
    ParamSpec(
        "publish_overlay",
        True,
        "Publish ~/overlay (masks coloured, labels drawn) for RViz and rqt; drawn only while something subscribes.",
    ),
    ParamSpec(
        "encoder_backend",
        "torch",
        "Vision encoder backend; an unavailable one falls back (tensorrt → onnxruntime → torch), said in the log.",
        choices=("torch", "compile", "onnxruntime", "tensorrt"),
    ),
    ParamSpec(
        "mask_source",
        "topic",
        "Where regions come from: 'topic' (RegionMasks on region_masks, paired with the image) or 'everything' "
        "(SAM segments each camera frame; no mask topic needed; the masks are also published on ~/region_masks).",
        choices=("topic", "everything"),
    ),
    ParamSpec(
        "sam_preset",
        "tiny",
        "SAM for the everything mode and ~/segment_and_describe: the released vit_h / vit_l / vit_b (give "
        "sam_checkpoint), tiny (the embedded default), or none (no SAM loaded).",
        choices=("tiny", "vit_b", "vit_l", "vit_h", "none"),
    ),
    ParamSpec(
        "sam_checkpoint",
        "",
        "SAM weights (sam_vit_h_4b8939.pth or .safetensors, a plain state dict); empty = the embedded tiny SAM.",
    ),
    ParamSpec(
        "sam_encoder_backend",
        "torch",
        "SAM image encoder backend, as encoder_backend.",
        choices=("torch", "compile", "onnxruntime", "tensorrt"),
    ),
    ParamSpec(
        "lisa_model_dir",
        "",
        "LISA checkpoint folder (e.g. LISA-7B-v1) for ~/reason_segment; empty = LISA not loaded (the node stays "
        "as light as without it).",
    ),
    ParamSpec(
        "lisa_clip_dir",
        "",
        "LISA's CLIP tower folder (openai/clip-vit-large-patch14); empty = the one config.json names, looked for "
        "in and beside lisa_model_dir.",
    ),
    ParamSpec(
        "lisa_max_new_tokens", 64, "Most tokens of a LISA answer (a request may ask fewer).", min_value=1, max_value=512
    ),
    ParamSpec(
        "everything_points_per_side",
        16,
        "Everything mode: SAM is prompted with a grid of this many points per side.",
        min_value=1,
        max_value=64,
    ),
    ParamSpec(
        "everything_pred_iou_thresh",
        -1.0,
        "Everything mode: keep masks whose predicted IoU exceeds this; -1 = what suits sam_preset (SAM's 0.88 for "
        "the released models, 0.5 for tiny).",
        min_value=-1.0,
        max_value=1.0,
    ),
    ParamSpec(
        "everything_stability_thresh",
        -1.0,
        "Everything mode: keep masks whose stability score (IoU of the mask at logit ±1) is at least this; -1 = what "
        "suits sam_preset (SAM's 0.95 for the released models, 0.6 for tiny).",
        min_value=-1.0,
        max_value=1.0,
    ),
    ParamSpec(
        "everything_nms_thresh",
        -1.0,
        "Everything mode: mask IoU above which the lower-scored mask is dropped (a part covering less of its whole "
        "stays); -1 = what suits sam_preset (0.7 for the released models, 0.5 for tiny).",
        min_value=-1.0,
        max_value=1.0,
    ),
    ParamSpec(
        "everything_min_area",
        0.0005,
        "Everything mode: smallest mask kept, as a fraction of the image.",
        min_value=0.0,
        max_value=0.5,
    ),
    ParamSpec(
        "max_image_pixels",
        40_000_000,
        "Largest image (width x height) encoded; larger ones are refused with an error.",
        min_value=1,
        max_value=1_000_000_000,
    ),
    ParamSpec(
        "max_aspect_ratio",
        32.0,
        "Largest long/short side ratio encoded; the released preprocessing's memory grows with it.",
        min_value=1.0,
        max_value=1000.0,
    ),
    ParamSpec(
        "track_iou",
        0.3,
        "Mask IoU at which a region is the one of the last frames and keeps its id (ids the mask source sends win).",
        min_value=0.01,
        max_value=1.0,
    ),
    ParamSpec(
        "track_max_missed",
        30,
        "Frames a region may go unseen (hidden, out of view) before its id is forgotten.",
        min_value=0,
        max_value=100_000,
    ),
    ParamSpec(
        "reuse_iou",
        0.85,
        "A tracked region whose mask overlaps the one it was described with by at least this keeps its "
        "description (the language model is not asked again).",
        min_value=0.0,
        max_value=1.0,
    ),
    ParamSpec(
        "reuse_max_age",
        10,
        "Frames a description may be reused before the region is described again; 0 = describe every region "
        "every frame.",
        min_value=0,
        max_value=100_000,
    ),
    ParamSpec(
        "find_verify_top",
        3,
        "~/find_region with verify: how many of the best-matching regions the model is asked about (yes/no).",
        min_value=1,
        max_value=256,
    ),
    ParamSpec(
        "use_depth",
        False,
        "Subscribe to 'depth' (16UC1 mm or 32FC1 m, aligned to the image) and 'camera_info', paired with the image "
        "by stamp: each region gets a 3D position and extent, and ~/markers shows them in RViz.",
    ),
    ParamSpec(
        "depth_percentiles",
        [5.0, 95.0],
        "Percentiles of a region's back-projected depth pixels that bound its extent (robust to mask edges).",
    ),
    ParamSpec(
        "depth_min_pixels",
        20,
        "Fewest valid depth pixels a region needs for a position; fewer leaves has_position false.",
        min_value=1,
        max_value=1_000_000,
    ),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", min_value=0.1, max_value=60.0),
    ParamSpec(
        "service_timeout",
        30.0,
        "Seconds a service request may wait for the model; a request still waiting then is answered "
        "'timed out' without being run.",
        min_value=0.1,
        max_value=3600.0,
    ),
)


@dataclass(frozen=True)
class NodeSettings:
    autostart: bool
    model_dir: str
    clip_path: str
    device: str
    dtype: str
    cpu_threads: int
    prompt_mode: str
    attributes: list[str]
    max_new_tokens: int
    max_regions: int
    slop: float
    sync_queue_size: int
    sync_timeout: float
    cache_size: int
    qos_depth: int
    qos_reliability: str
    image_transport: str
    publish_overlay: bool
    encoder_backend: str
    mask_source: str
    sam_preset: str
    sam_checkpoint: str
    sam_encoder_backend: str
    lisa_model_dir: str
    lisa_clip_dir: str
    lisa_max_new_tokens: int
    everything_points_per_side: int
    everything_pred_iou_thresh: float
    everything_stability_thresh: float
    everything_nms_thresh: float
    everything_min_area: float
    max_image_pixels: int
    max_aspect_ratio: float
    track_iou: float
    track_max_missed: int
    reuse_iou: float
    reuse_max_age: int
    find_verify_top: int
    use_depth: bool
    depth_percentiles: list[float]
    depth_min_pixels: int
    diagnostics_period: float
    service_timeout: float


SPECS = {spec.name: spec for spec in NODE_PARAMETERS}


def check_value(name: str, value: Any) -> None:
    """Raise ValueError for a value outside the choices (ranges are checked by rclpy's descriptors)."""
    spec = SPECS[name]
    if name == "depth_percentiles" and not (len(value) == 2 and 0 <= value[0] < value[1] <= 100):
        raise ValueError(f"parameter depth_percentiles={list(value)}: two percentiles, low < high, within 0..100")
    if name == "attributes":
        unknown = [v for v in value if v not in spec.choices]
        if unknown or not len(value):
            raise ValueError(f"parameter attributes={list(value)}: names from {', '.join(spec.choices)}")
        return
    if spec.choices and value not in spec.choices:
        raise ValueError(f"parameter {name}={value!r}: choose one of {', '.join(spec.choices)}")


def declare_parameters(node: Node) -> NodeSettings:
    """Declare all parameters with descriptors and return their values, checking choices."""
    for spec in NODE_PARAMETERS:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())
    return read_settings(node)


def read_settings(node: Node) -> NodeSettings:
    values = {spec.name: node.get_parameter(spec.name).value for spec in NODE_PARAMETERS}
    for name, value in values.items():
        check_value(name, value)
    values["depth_percentiles"] = [float(v) for v in values["depth_percentiles"]]  # rclpy gives an array.array
    values["attributes"] = list(values["attributes"])
    return NodeSettings(**values)


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


# Shared by launch/perception.launch.py and the osprey-perception entry point (name:=value).
LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("image_topic", "/camera/image_raw", "Camera image topic (remaps the node's 'image')."),
    LaunchArgument(
        "masks_topic", "/camera/region_masks", "osprey_interfaces/RegionMasks topic (remaps 'region_masks')."
    ),
    LaunchArgument(
        "depth_topic",
        "/camera/aligned_depth_to_color/image_raw",
        "Depth image aligned to the camera image (remaps 'depth'; read when use_depth is true).",
    ),
    LaunchArgument(
        "camera_info_topic", "/camera/color/camera_info", "The camera image's CameraInfo (remaps 'camera_info')."
    ),
    LaunchArgument("params_file", "", "Parameters YAML; empty = the package's config/perception.yaml."),
    LaunchArgument("namespace", "", "Namespace for the node."),
    LaunchArgument(
        "mask_source",
        "",
        "topic or everything (SAM segments each frame; no mask topic); empty = the params file's value.",
    ),
)
LAUNCH_DEFAULTS = {arg.name: arg.default for arg in LAUNCH_ARGUMENTS}
