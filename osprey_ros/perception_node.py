"""``osprey_perception``: camera image + region masks in, region descriptions out, questions answered.

One frame's path: ``_on_image`` / ``_on_masks`` (executor thread: pair by stamp, hand over, never wait)
→ ``ModelWorker`` (model thread: newest frame wins) → ``_process_frame`` (convert, describe, publish).
With ``mask_source: everything`` there is no mask topic: each image goes straight to the model thread,
where SAM finds the regions (``region_segmenter``) before Osprey describes them.

A managed (lifecycle) node, as Nav2 and the ROS 2 design recommend for heavy resources: configure loads
the weights, activate subscribes and publishes, deactivate stops that, cleanup frees the model. With
``autostart`` (the default) it brings itself to active at start-up.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from osprey_interfaces.msg import RegionDescriptionArray, RegionMasks
from rcl_interfaces.msg import SetParametersResult
from rclpy._rclpy_pybind11 import RCLError
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from osprey_model import FrameFeatures, OspreyPredictor
from osprey_model.embedded import default_checkpoint, default_sam_checkpoint, parse_dtype
from osprey_model.image_processing import ImageLimits
from osprey_model.sam import AutomaticMaskConfig, SamSegmenter, get_sam_preset

from .depth import RegionPosition
from .depth_input import DepthInput
from .describe_service import DescribeService
from .description_messages import descriptions_msg, markers_msg
from .find_service import FindRegionService
from .frame_store import FrameStore
from .image_conversion import ImageConversionError, compressed_to_rgb, image_to_rgb, mask_to_bool, numpy_to_image
from .model_worker import ModelWorker
from .overlay import draw_overlay
from .parameters import (
    EVERYTHING_PARAMETERS,
    NODE_NAME,
    RUNTIME_PARAMETERS,
    NodeSettings,
    check_value,
    declare_parameters,
    read_settings,
)
from .reason_service import ReasonService
from .region_describer import RegionDescriber
from .region_finder import DescribedFrame, DescribedFrames
from .region_reasoner import RegionReasoner
from .region_segmenter import RegionSegmenter
from .region_tracker import RegionTracker, TrackerConfig, describe_tracked, mask_classes
from .segment_service import SegmentService
from .spinning import spin_until_shutdown
from .stamps import stamp_ns
from .sync import ApproximateTimeSync

RUNTIME_LIST = ", ".join(sorted(RUNTIME_PARAMETERS))
CameraImage: TypeAlias = Image | CompressedImage
Frame: TypeAlias = tuple[int, CameraImage]  # the frame store's key, the image as received
FrameJob: TypeAlias = tuple[Frame, RegionMasks | None]  # None: SAM finds the regions (everything mode)


def to_rgb(msg: CameraImage) -> np.ndarray:
    return compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)


@dataclass
class PipelineStats:
    images_received: int = 0
    mask_sets_received: int = 0
    frames_described: int = 0
    frame_errors: int = 0
    regions_capped: int = 0
    regions_found_last: int = 0  # everything mode: regions SAM found in the last frame
    overlays_drawn: int = 0
    service_calls: int = 0
    service_errors: int = 0
    latency_total_s: float = 0.0
    latency_last_s: float = 0.0


@dataclass
class Pipeline:
    """What exists while the node is configured: the model and everything fed to or by it."""

    describer: RegionDescriber
    segmenter: RegionSegmenter | None  # None when sam_preset is none
    reasoner: RegionReasoner | None  # None unless lisa_model_dir names a LISA checkpoint
    frames: FrameStore[CameraImage, FrameFeatures]
    sync: ApproximateTimeSync[Frame, RegionMasks]
    worker: ModelWorker[FrameJob]
    depth: DepthInput | None  # None unless use_depth
    tracker: RegionTracker
    described: DescribedFrames  # the last described frames' regions, for ~/find_region
    stats: PipelineStats = field(default_factory=PipelineStats)
    teardown: list[Callable[[], object]] = field(default_factory=list)  # undoes what configure made
    inputs: list[Callable[[], object]] = field(default_factory=list)  # undoes what activate made


def load_predictor(settings: NodeSettings) -> OspreyPredictor:
    model_dir = Path(settings.model_dir) if settings.model_dir else default_checkpoint()
    return OspreyPredictor.from_pretrained(
        model_dir,
        settings.clip_path or None,
        device=settings.device,
        dtype=parse_dtype(settings.dtype),
        encoder_backend=settings.encoder_backend,
        image_limits=ImageLimits(settings.max_image_pixels, settings.max_aspect_ratio),
    )


def everything_config(settings: NodeSettings) -> AutomaticMaskConfig:
    """The generator's settings; a negative threshold means the one that suits the SAM preset."""
    thresholds = {
        name: value
        for name, value in (
            ("pred_iou_thresh", settings.everything_pred_iou_thresh),
            ("stability_score_thresh", settings.everything_stability_thresh),
            ("nms_thresh", settings.everything_nms_thresh),
        )
        if value >= 0
    }
    return AutomaticMaskConfig.recommended(
        get_sam_preset(settings.sam_preset) if settings.sam_preset != "none" else None,
        points_per_side=settings.everything_points_per_side,
        min_area_fraction=settings.everything_min_area,
        max_masks=settings.max_regions,
        **thresholds,
    )


def attribute_names(settings: NodeSettings) -> tuple[str, ...]:
    return tuple(name for name in settings.attributes if name != "none")


def tracker_config(settings: NodeSettings) -> TrackerConfig:
    return TrackerConfig(
        match_iou=settings.track_iou,
        reuse_iou=settings.reuse_iou,
        reuse_max_age=settings.reuse_max_age,
        max_missed=settings.track_max_missed,
    )


def load_segmenter(settings: NodeSettings, warn: Callable[[str], object]) -> RegionSegmenter | None:
    """SAM as the parameters name it; None for ``sam_preset: none``, or when the embedded default is missing
    (an install without it) and the masks come from a topic: then only ``~/segment_and_describe`` is lost."""
    if settings.sam_preset == "none":
        if settings.mask_source == "everything":
            raise ValueError("mask_source everything needs SAM: set sam_preset (tiny is embedded)")
        return None
    if settings.sam_checkpoint:
        checkpoint = Path(settings.sam_checkpoint)
    elif settings.sam_preset == "tiny":
        try:
            checkpoint = default_sam_checkpoint()
        except FileNotFoundError as exc:
            if settings.mask_source == "everything":
                raise
            warn(f"{exc}; running without SAM (~/segment_and_describe will say so)")
            return None
    else:
        raise ValueError(f"sam_preset {settings.sam_preset} needs sam_checkpoint (e.g. sam_vit_h_4b8939.pth)")
    segmenter = SamSegmenter.from_pretrained(
        settings.sam_preset,
        checkpoint,
        device=settings.device,
        dtype=parse_dtype(settings.dtype),
        encoder_backend=settings.sam_encoder_backend,
        image_limits=ImageLimits(settings.max_image_pixels, settings.max_aspect_ratio),
    )
    return RegionSegmenter(segmenter, everything_config(settings))


def load_reasoner(settings: NodeSettings) -> RegionReasoner | None:
    """LISA when ``lisa_model_dir`` names a checkpoint; imported only then, so the node stays as light."""
    if not settings.lisa_model_dir:
        return None
    from osprey_model.lisa import LisaPredictor

    predictor = LisaPredictor.from_pretrained(
        settings.lisa_model_dir,
        settings.lisa_clip_dir or None,
        device=settings.device,
        dtype=parse_dtype(settings.dtype),
        image_limits=ImageLimits(settings.max_image_pixels, settings.max_aspect_ratio),
    )
    return RegionReasoner(predictor, settings.lisa_max_new_tokens)


class PerceptionNode(LifecycleNode):
    def __init__(self, predictor: OspreyPredictor | None = None, **kwargs) -> None:
        """``predictor``: an already loaded model (tests, the demo); else configure loads one."""
        super().__init__(NODE_NAME, **kwargs)
        self.settings = declare_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._given_predictor = predictor
        self.pipeline: Pipeline | None = None
        self.active = False
        self.model_name = ""
        self.last_error = ""
        self._starting = False  # True while create_node_or_exit brings the node up
        self._unmatched_logged = 0
        self._last_depth_error = ""
        self._described_at_last_report = 0
        self._last_report = time.monotonic()
        self.inputs_group = MutuallyExclusiveCallbackGroup()  # sync state is touched only from this group

    # ---- lifecycle --------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.settings = settings = read_settings(self)
            if settings.cpu_threads:
                torch.set_num_threads(settings.cpu_threads)
            predictor = self._given_predictor or load_predictor(settings)
            describer = RegionDescriber(
                predictor, settings.prompt_mode, settings.max_new_tokens, attribute_names(settings)
            )
            segmenter = load_segmenter(settings, self.get_logger().warning)
            reasoner = load_reasoner(settings)
        except Exception as exc:  # missing or broken weights, bad values; rclpy would swallow it without a word
            self.last_error = str(exc)
            if not self._starting:  # at start-up the one FATAL line says it
                self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.model_name = Path(settings.model_dir or default_checkpoint()).name
        sync: ApproximateTimeSync[Frame, RegionMasks] = ApproximateTimeSync(
            settings.slop, settings.sync_queue_size, settings.sync_timeout
        )
        worker: ModelWorker[FrameJob] = ModelWorker(self._process_frame, self._on_worker_error)
        depth = (
            DepthInput(settings.sync_queue_size, settings.slop, settings.depth_percentiles, settings.depth_min_pixels)
            if settings.use_depth
            else None
        )
        tracker = RegionTracker(tracker_config(settings))
        self.pipeline = pipeline = Pipeline(
            describer, segmenter, reasoner, FrameStore(settings.cache_size), sync, worker, depth, tracker,
            DescribedFrames(settings.cache_size),
        )  # fmt: skip
        # Planners and RViz may ask for reliable delivery; a reliable publisher serves both kinds of subscriber.
        output_qos = QoSProfile(
            depth=settings.qos_depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
        )
        self.descriptions_pub = self.create_lifecycle_publisher(RegionDescriptionArray, "~/descriptions", output_qos)
        self.overlay_pub = self.create_lifecycle_publisher(Image, "~/overlay", output_qos)
        # The masks SAM made in everything mode, for other nodes (trackers, planners) to use.
        self.region_masks_pub = self.create_lifecycle_publisher(RegionMasks, "~/region_masks", output_qos)
        # The masks LISA found for ~/reason_segment queries, for other nodes.
        self.reason_masks_pub = self.create_lifecycle_publisher(RegionMasks, "~/reason_masks", output_qos)
        # Each region's 3D box and label for RViz (use_depth only).
        self.markers_pub = self.create_lifecycle_publisher(MarkerArray, "~/markers", output_qos)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.describe_service = DescribeService(self)
        self.segment_service = SegmentService(self)
        self.reason_service = ReasonService(self, self.reason_masks_pub.publish)
        self.find_service = FindRegionService(self)
        diagnostics_timer = self.create_timer(settings.diagnostics_period, self._publish_diagnostics, self.inputs_group)
        pipeline.teardown += [
            partial(self.destroy_lifecycle_publisher, self.descriptions_pub),
            partial(self.destroy_lifecycle_publisher, self.overlay_pub),
            partial(self.destroy_lifecycle_publisher, self.region_masks_pub),
            partial(self.destroy_lifecycle_publisher, self.reason_masks_pub),
            partial(self.destroy_lifecycle_publisher, self.markers_pub),
            partial(self.destroy_publisher, self.diagnostics_pub),
            partial(self.destroy_service, self.describe_service.service),
            partial(self.destroy_service, self.segment_service.service),
            partial(self.destroy_service, self.reason_service.service),
            partial(self.destroy_service, self.find_service.service),
            partial(self.destroy_timer, diagnostics_timer),
        ]
        sam = f", SAM {settings.sam_preset}" if segmenter is not None else ", no SAM"
        sam += f", LISA {Path(settings.lisa_model_dir).name}" if reasoner is not None else ""
        self.get_logger().info(
            f"configured: model {self.model_name}{sam} loaded on {settings.device}/{settings.dtype}, "
            f"regions from {settings.mask_source}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        pipeline = self._configured()
        settings = self.settings
        reliability = (
            ReliabilityPolicy.RELIABLE if settings.qos_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        )
        input_qos = QoSProfile(depth=settings.qos_depth, history=HistoryPolicy.KEEP_LAST, reliability=reliability)
        group = self.inputs_group
        if settings.image_transport == "compressed":
            image_sub = self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, input_qos, callback_group=group
            )
        else:
            image_sub = self.create_subscription(Image, "image", self._on_image, input_qos, callback_group=group)
        pipeline.inputs = [partial(self.destroy_subscription, image_sub)]
        if settings.mask_source == "topic":
            masks_sub = self.create_subscription(
                RegionMasks, "region_masks", self._on_masks, input_qos, callback_group=group
            )
            expiry_timer = self.create_timer(min(settings.sync_timeout / 2, 0.5), self._expire_orphan_masks, group)
            pipeline.inputs += [
                partial(self.destroy_subscription, masks_sub),
                partial(self.destroy_timer, expiry_timer),
            ]
        if pipeline.depth is not None:
            depth_sub = self.create_subscription(Image, "depth", self._on_depth, input_qos, callback_group=group)
            info_sub = self.create_subscription(
                CameraInfo, "camera_info", self._on_camera_info, input_qos, callback_group=group
            )
            pipeline.inputs += [
                partial(self.destroy_subscription, depth_sub),
                partial(self.destroy_subscription, info_sub),
            ]
        self.active = True
        self.get_logger().info(
            f"ready: model {self.model_name} on {settings.device}/{settings.dtype} "
            f"({torch.get_num_threads()} CPU threads), regions from {settings.mask_source}, "
            f"prompt mode {settings.prompt_mode}, "
            f"max {settings.max_regions} regions, slop {settings.slop}s, {settings.qos_reliability} camera input"
        )
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self.get_logger().info("deactivated: camera input stopped, model kept")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _configured(self) -> Pipeline:
        if self.pipeline is None:
            raise RuntimeError("the node is not configured")
        return self.pipeline

    def _stop_inputs(self) -> None:
        self.active = False
        if self.pipeline is not None:
            for undo in self.pipeline.inputs:
                undo()
            self.pipeline.inputs = []

    def _release(self) -> None:
        """Everything configure made goes: the model thread, the entities, the weights (and GPU memory)."""
        self._stop_inputs()
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is None:
            return
        pipeline.worker.stop()
        for undo in pipeline.teardown:
            undo()
        del pipeline
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ---- parameters ---------------------------------------------------------------------------------------
    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Run-time changes where they are safe; the rest only while unconfigured (read on configure)."""
        configured = self.pipeline is not None
        for parameter in parameters:
            if configured and parameter.name not in RUNTIME_PARAMETERS:
                return SetParametersResult(
                    successful=False,
                    reason=f"{parameter.name} is read on configure: set it while the node is unconfigured "
                    f"(lifecycle cleanup), or in the params file. Changeable now: {RUNTIME_LIST}",
                )
            try:
                check_value(parameter.name, parameter.value)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        changes = {p.name: p.value for p in parameters}
        self.settings = dataclasses.replace(self.settings, **changes)
        if configured and self.pipeline is not None:
            describer = self.pipeline.describer
            describer.prompt_mode, describer.max_new_tokens = self.settings.prompt_mode, self.settings.max_new_tokens
            describer.attributes = attribute_names(self.settings)
            self.pipeline.tracker.config = tracker_config(self.settings)
            if changes.keys() & {"prompt_mode", "max_new_tokens", "attributes"}:
                self.pipeline.tracker.forget_descriptions()  # text asked another way is not reused
            self.pipeline.sync.slop_ns = int(self.settings.slop * 1e9)
            if self.pipeline.depth is not None:
                self.pipeline.depth.slop_ns = self.pipeline.sync.slop_ns
            if self.pipeline.segmenter is not None and changes.keys() & {*EVERYTHING_PARAMETERS, "max_regions"}:
                self.pipeline.segmenter.everything_config = everything_config(self.settings)
            self.get_logger().info(f"parameters changed: {changes}")
        return SetParametersResult(successful=True)

    # ---- executor thread: never blocks on the model ----------------------------------------------------
    def _on_image(self, msg: CameraImage) -> None:
        pipeline = self.pipeline
        if pipeline is None:
            return
        pipeline.stats.images_received += 1
        stamp = stamp_ns(msg.header.stamp)
        key = pipeline.frames.add_image(stamp, msg)
        if self.settings.mask_source == "everything":
            pipeline.worker.submit_frame(((key, msg), None))
            return
        self._hand_over(pipeline, pipeline.sync.add_image(stamp, (key, msg)))

    def _on_depth(self, msg: Image) -> None:
        if self.pipeline is not None and self.pipeline.depth is not None:
            self.pipeline.depth.add_depth(stamp_ns(msg.header.stamp), msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        if self.pipeline is not None and self.pipeline.depth is not None:
            self.pipeline.depth.add_camera_info(stamp_ns(msg.header.stamp), msg)

    def _on_masks(self, msg: RegionMasks) -> None:
        pipeline = self.pipeline
        if pipeline is None:
            return
        pipeline.stats.mask_sets_received += 1
        self._hand_over(pipeline, pipeline.sync.add_masks(stamp_ns(msg.header.stamp), msg))

    def _hand_over(self, pipeline: Pipeline, pairs: list[FrameJob]) -> None:
        for pair in pairs:
            pipeline.worker.submit_frame(pair)
        self._report_unmatched(pipeline)

    def _expire_orphan_masks(self) -> None:
        pipeline = self.pipeline
        if pipeline is not None and pipeline.sync.expire():
            self._report_unmatched(pipeline)

    def _report_unmatched(self, pipeline: Pipeline) -> None:
        unmatched = pipeline.sync.stats.masks_unmatched
        if unmatched > self._unmatched_logged:
            self.get_logger().warning(
                f"dropped {unmatched - self._unmatched_logged} mask set(s) with no camera image within "
                f"slop={self.settings.slop}s ({unmatched} so far)"
            )
            self._unmatched_logged = unmatched

    # ---- model thread ---------------------------------------------------------------------------------
    def read_masks(self, masks: list[Image], ids: list[int], where: str) -> tuple[list[np.ndarray], list[int]]:
        if not masks:
            raise ValueError("no masks: send at least one mono8 mask")
        if ids and len(ids) != len(masks):
            raise ValueError(f"{len(ids)} ids for {len(masks)} masks")
        ids = list(ids) if ids else list(range(len(masks)))
        limit = self.settings.max_regions
        if len(masks) > limit:
            self._configured().stats.regions_capped += len(masks) - limit
            self.get_logger().warning(
                f"{where}: {len(masks)} masks received, describing the first {limit} (max_regions)"
            )
            masks, ids = masks[:limit], ids[:limit]
        return [mask_to_bool(mask, i) for i, mask in enumerate(masks)], ids

    def frame_features(self, key: int, image: CameraImage | None) -> FrameFeatures:
        """The frame's decoded pixels and the encoder outputs computed so far (each encoder runs on first use,
        once per frame)."""
        pipeline = self._configured()

        def decode(msg: CameraImage) -> FrameFeatures:
            return FrameFeatures(to_rgb(msg))

        try:
            return pipeline.frames.features_for(key, decode)
        except KeyError:  # pushed out of the cache while it waited for the model: decode it uncached
            if image is None:
                raise
            return decode(image)

    def _process_frame(self, job: FrameJob) -> None:
        (key, image_msg), masks_msg = job
        pipeline = self._configured()
        stamp = stamp_ns(image_msg.header.stamp)
        where = f"frame {stamp / 1e9:.3f}"
        start = time.perf_counter()
        try:
            if masks_msg is None:
                frame = self.frame_features(key, image_msg)
                masks = self._segment_everything(pipeline, frame)
                given_ids, classes = None, None
            else:
                masks, ids = self.read_masks(list(masks_msg.masks), list(masks_msg.ids), where)
                given_ids = ids if len(masks_msg.ids) else None
                classes = mask_classes(list(masks_msg.classes), len(masks_msg.masks), len(masks))
                frame = self.frame_features(key, image_msg)
            # Stable ids; only new or changed regions go to the model, the rest keep their text.
            describe = partial(pipeline.describer.describe, frame)
            regions = describe_tracked(pipeline.tracker, describe, masks, frame.rgb.shape[:2], given_ids, classes)
            if masks_msg is None:  # what SAM found, under the ids the descriptions use
                self._publish_region_masks(image_msg, masks, [region.id for region in regions])
        except (ImageConversionError, ValueError) as exc:
            pipeline.stats.frame_errors += 1
            self.get_logger().error(f"{where}: {exc}")
            return
        positions = self._positions(pipeline, stamp, masks, where)
        pipeline.described.add(DescribedFrame(stamp, image_msg.header, regions, masks))
        elapsed = time.perf_counter() - start
        pipeline.stats.frames_described += 1
        pipeline.stats.latency_total_s += elapsed
        pipeline.stats.latency_last_s = elapsed
        descriptions = descriptions_msg(image_msg.header, self.model_name, regions, elapsed, positions)
        self.descriptions_pub.publish(descriptions)
        if pipeline.depth is not None:
            self.markers_pub.publish(markers_msg(descriptions))
        # Drawn only for a subscriber: at 720p the drawing and its 2.7 MB message hold the GIL the camera's
        # callbacks need (bench/dds_delivery.py at 1280x720, 15 Hz, 2 cores, nobody watching: 44-48 of 100
        # frames described and 1-2 mask sets lost when drawn; 73-77 described and none lost when not).
        if self.settings.publish_overlay and self.overlay_pub.get_subscription_count():
            pipeline.stats.overlays_drawn += 1
            overlay = draw_overlay(frame.rgb, masks, regions)
            self.overlay_pub.publish(numpy_to_image(overlay, "rgb8", header=image_msg.header))

    def _positions(
        self, pipeline: Pipeline, stamp: int, masks: list[np.ndarray], where: str
    ) -> list[RegionPosition] | None:
        """Each region's 3D position, or None: depth off, or no usable depth for this frame (said, and the
        descriptions still go out)."""
        if pipeline.depth is None or not masks:
            return None
        try:
            positions = pipeline.depth.positions(stamp, masks)
        except ValueError as exc:  # a new problem is said at once, the same one again every 5 s
            if str(exc) != self._last_depth_error:
                self.get_logger().error(f"{where}: depth not used: {exc}")
            else:
                self.get_logger().error(f"{where}: depth not used: {exc}", throttle_duration_sec=5.0)
            self._last_depth_error = str(exc)
            return None
        if positions is None:
            self.get_logger().warning(
                f"{where}: no depth image and camera_info within slop={self.settings.slop}s; regions have no position",
                throttle_duration_sec=5.0,
            )
        return positions

    def _segment_everything(self, pipeline: Pipeline, frame: FrameFeatures) -> list[np.ndarray]:
        """SAM's regions of the frame (best first, at most max_regions); none is not an error."""
        assert pipeline.segmenter is not None  # configure refuses everything mode without SAM
        found = pipeline.segmenter.everything(frame)
        pipeline.stats.regions_found_last = len(found)
        return list(found.masks)

    def _publish_region_masks(self, image_msg: CameraImage, masks: list[np.ndarray], ids: list[int]) -> None:
        """Everything mode's masks for other nodes (a frame with none gives an empty message)."""
        out = RegionMasks(header=image_msg.header, ids=ids)
        out.masks = [numpy_to_image(mask.astype(np.uint8) * 255, "mono8", header=image_msg.header) for mask in masks]
        self.region_masks_pub.publish(out)

    def _on_worker_error(self, exc: BaseException) -> None:
        if self.pipeline is not None:
            self.pipeline.stats.frame_errors += 1
        self.get_logger().error(f"unexpected error while describing a frame: {exc!r}")

    # ---- diagnostics ----------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        pipeline = self.pipeline
        if pipeline is None:
            return
        now = time.monotonic()
        stats, sync, worker = pipeline.stats, pipeline.sync.stats, pipeline.worker
        rate = (stats.frames_described - self._described_at_last_report) / max(now - self._last_report, 1e-6)
        self._described_at_last_report, self._last_report = stats.frames_described, now
        mean_ms = 1000 * stats.latency_total_s / stats.frames_described if stats.frames_described else 0.0
        values = {
            "state": "active" if self.active else "inactive",
            "images_received": stats.images_received,
            "mask_sets_received": stats.mask_sets_received,
            "frames_matched": sync.pairs,
            "images_unmatched": sync.images_unused,
            "frames_described": stats.frames_described,
            "frames_dropped": worker.frames_dropped,
            "mask_sets_unmatched": sync.masks_unmatched,
            "frame_errors": stats.frame_errors,
            "regions_capped": stats.regions_capped,
            "service_calls": stats.service_calls,
            "service_errors": stats.service_errors,
            "service_requests_waiting": worker.pending_requests,
            "service_requests_expired": worker.requests_expired,
            "rate_hz": f"{rate:.2f}",
            "latency_ms_last": f"{1000 * stats.latency_last_s:.1f}",
            "latency_ms_mean": f"{mean_ms:.1f}",
            "frames_cached": len(pipeline.frames.stamps()),
            "frames_encoded": pipeline.frames.encoded,
            "frames_encoded_for_service": sum(
                service.frames_encoded for service in (self.describe_service, self.segment_service, self.reason_service)
            ),
            "encoder_runs_osprey": pipeline.describer.encoder_runs.total,
            "encoder_runs_sam": pipeline.segmenter.encoder_runs.total if pipeline.segmenter else 0,
            "encoder_runs_lisa": pipeline.reasoner.encoder_runs.total if pipeline.reasoner else 0,
            "mask_source": self.settings.mask_source,
            "regions_found_last": stats.regions_found_last,
            "overlays_drawn": stats.overlays_drawn,
            "regions_described": pipeline.tracker.stats.described,
            "regions_reused": pipeline.tracker.stats.reused,
            "regions_tracked": pipeline.tracker.stats.tracks_started,
        }
        if pipeline.depth is not None:
            depth = pipeline.depth.stats
            values |= {
                "depth_received": depth.depth_received,
                "camera_info_received": depth.camera_info_received,
                "frames_without_depth": depth.frames_without_depth,
                "depth_errors": depth.depth_errors,
            }
        level = DiagnosticStatus.WARN if stats.frame_errors or sync.masks_unmatched else DiagnosticStatus.OK
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: pipeline",
            message=f"{rate:.2f} frames/s, {mean_ms:.0f} ms mean latency, {worker.frames_dropped} dropped",
            hardware_id=self.model_name,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        header = Header(stamp=self.get_clock().now().to_msg())
        self.diagnostics_pub.publish(DiagnosticArray(header=header, status=[status]))


def spin_nodes(nodes: list[Node]) -> None:
    """Spin until Ctrl-C or shutdown; the model thread keeps the callbacks free, 4 threads serve them."""
    executor = MultiThreadedExecutor(num_threads=4)
    for node in nodes:
        executor.add_node(node)
    try:
        spin_until_shutdown(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:  # Ctrl-C can invalidate the context while the executor builds its wait set
        if rclpy.ok():
            raise
    finally:
        shutdown_quietly(executor, nodes)


def shutdown_quietly(executor: Any, nodes: list[Node]) -> None:
    """Ctrl-C may already have shut the context down: then destroying things raises; nothing is left to do."""
    for node in nodes:
        if isinstance(node, PerceptionNode):
            node._release()
    try:
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
    except Exception:  # RCLError / InvalidHandle after an external shutdown: the process is ending anyway
        pass


def fatal(message: str) -> SystemExit:
    """One FATAL line and exit code 1 (no traceback) for a node that cannot start."""
    rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {message}")
    rclpy.try_shutdown()
    return SystemExit(1)


def create_node_or_exit(**kwargs) -> PerceptionNode:
    """The node, brought to active when ``autostart`` is set; or one fatal line and exit code 1."""
    # The model thread is mostly Python between small kernels and holds the GIL; the executor needs it in
    # many short turns per wake-up. A shorter switch interval than the 5 ms default keeps timers (and
    # /diagnostics) on time while the model runs: measured, the largest diagnostics gap in a 24-request
    # burst fell from 0.83 s to 0.20 s (period 0.2 s).
    sys.setswitchinterval(0.0005)
    try:
        node = PerceptionNode(**kwargs)
    except (ValueError, InvalidParameterValueException, InvalidParameterTypeException) as exc:  # bad parameter
        raise fatal(str(exc)) from None
    if node.settings.autostart:
        node._starting = True
        configured = node.trigger_configure()
        node._starting = False
        if configured != TransitionCallbackReturn.SUCCESS:
            node.destroy_node()
            raise fatal(node.last_error or "configure failed")
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            node.destroy_node()
            raise fatal("activate failed")
    return node


def main(args: list[str] | None = None) -> None:
    """Entry point for ``ros2 run`` / launch: standard ``--ros-args`` handling."""
    rclpy.init(args=args)
    try:
        spin_nodes([create_node_or_exit()])
    except KeyboardInterrupt:  # Ctrl-C while the weights were loading
        pass
    finally:
        rclpy.try_shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
