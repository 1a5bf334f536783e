"""``osprey_perception``: camera image + region masks in, region descriptions out, questions answered.

One frame's path: ``_on_image`` / ``_on_masks`` (executor thread: pair by stamp, hand over, never wait)
→ ``ModelWorker`` (model thread: newest frame wins) → ``_process_frame`` (convert, describe, publish).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import rclpy
import torch
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from osprey_interfaces.msg import RegionDescription, RegionDescriptionArray, RegionMasks
from osprey_interfaces.srv import DescribeRegions
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from osprey_model import EncodedFrame, OspreyPredictor
from osprey_model.checkpoint_io import CheckpointError
from osprey_model.embedded import default_checkpoint, parse_dtype

from .frame_store import FrameStore
from .image_conversion import ImageConversionError, compressed_to_rgb, image_to_rgb, mask_to_bool, numpy_to_image
from .model_worker import ModelWorker, WorkerBusy
from .overlay import draw_overlay
from .parameters import NODE_NAME, NodeSettings, declare_parameters
from .region_describer import RegionDescriber, RegionResult
from .sync import ApproximateTimeSync

CameraImage: TypeAlias = Image | CompressedImage


def stamp_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def to_stamp(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


@dataclass
class PipelineStats:
    images_received: int = 0
    mask_sets_received: int = 0
    frames_described: int = 0
    frame_errors: int = 0
    regions_capped: int = 0
    service_calls: int = 0
    service_errors: int = 0
    latency_total_s: float = 0.0
    latency_last_s: float = 0.0


def load_predictor(settings: NodeSettings) -> OspreyPredictor:
    model_dir = Path(settings.model_dir) if settings.model_dir else default_checkpoint()
    return OspreyPredictor.from_pretrained(
        model_dir,
        settings.clip_path or None,
        device=settings.device,
        dtype=parse_dtype(settings.dtype),
        encoder_backend=settings.encoder_backend,
    )


class PerceptionNode(Node):
    def __init__(self, predictor: OspreyPredictor | None = None, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.settings = settings = declare_parameters(self)
        if settings.cpu_threads:
            torch.set_num_threads(settings.cpu_threads)
        self.model_name = Path(settings.model_dir or default_checkpoint()).name
        self.describer = RegionDescriber(
            predictor or load_predictor(settings), settings.prompt_mode, settings.max_new_tokens
        )
        self.frames: FrameStore[CameraImage, EncodedFrame] = FrameStore(settings.cache_size)
        self.sync: ApproximateTimeSync[CameraImage, RegionMasks] = ApproximateTimeSync(
            settings.slop, settings.sync_queue_size, settings.sync_timeout
        )
        self.stats = PipelineStats()
        self._unmatched_logged = 0
        self._described_at_last_report = 0
        self._last_report = time.monotonic()

        reliability = (
            ReliabilityPolicy.RELIABLE if settings.qos_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        )
        input_qos = QoSProfile(depth=settings.qos_depth, history=HistoryPolicy.KEEP_LAST, reliability=reliability)
        # Planners and RViz may ask for reliable delivery; a reliable publisher serves both kinds of subscriber.
        output_qos = QoSProfile(
            depth=settings.qos_depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
        )
        inputs = MutuallyExclusiveCallbackGroup()  # sync state is touched only from this group
        if settings.image_transport == "compressed":
            self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, input_qos, callback_group=inputs
            )
        else:
            self.create_subscription(Image, "image", self._on_image, input_qos, callback_group=inputs)
        self.create_subscription(RegionMasks, "region_masks", self._on_masks, input_qos, callback_group=inputs)
        self.descriptions_pub = self.create_publisher(RegionDescriptionArray, "~/descriptions", output_qos)
        self.overlay_pub = self.create_publisher(Image, "~/overlay", output_qos) if settings.publish_overlay else None
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(DescribeRegions, "~/describe", self._on_describe, callback_group=ReentrantCallbackGroup())
        self.create_timer(settings.diagnostics_period, self._publish_diagnostics, callback_group=inputs)
        self.create_timer(min(settings.sync_timeout / 2, 0.5), self._expire_orphan_masks, callback_group=inputs)

        self.worker: ModelWorker[tuple[CameraImage, RegionMasks]] = ModelWorker(
            self._process_frame, self._on_worker_error
        )
        self.get_logger().info(
            f"ready: model {self.model_name} on {settings.device}/{settings.dtype} "
            f"({torch.get_num_threads()} CPU threads), prompt mode {settings.prompt_mode}, "
            f"max {settings.max_regions} regions, slop {settings.slop}s"
        )

    # ---- executor thread: never blocks on the model ----------------------------------------------------
    def _on_image(self, msg: CameraImage) -> None:
        self.stats.images_received += 1
        stamp = stamp_ns(msg.header.stamp)
        self.frames.add_image(stamp, msg)
        self._hand_over(self.sync.add_image(stamp, msg))

    def _on_masks(self, msg: RegionMasks) -> None:
        self.stats.mask_sets_received += 1
        self._hand_over(self.sync.add_masks(stamp_ns(msg.header.stamp), msg))

    def _hand_over(self, pairs: list[tuple[CameraImage, RegionMasks]]) -> None:
        for pair in pairs:
            self.worker.submit_frame(pair)
        self._report_unmatched()

    def _expire_orphan_masks(self) -> None:
        if self.sync.expire():
            self._report_unmatched()

    def _report_unmatched(self) -> None:
        unmatched = self.sync.stats.masks_unmatched
        if unmatched > self._unmatched_logged:
            self.get_logger().warning(
                f"dropped {unmatched - self._unmatched_logged} mask set(s) with no camera image within "
                f"slop={self.settings.slop}s ({unmatched} so far)"
            )
            self._unmatched_logged = unmatched

    # ---- model thread ---------------------------------------------------------------------------------
    def _to_rgb(self, msg: CameraImage) -> np.ndarray:
        return compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)

    def _read_masks(self, masks: list[Image], ids: list[int], where: str) -> tuple[list[np.ndarray], list[int]]:
        if not masks:
            raise ValueError("no masks: send at least one mono8 mask")
        if ids and len(ids) != len(masks):
            raise ValueError(f"{len(ids)} ids for {len(masks)} masks")
        ids = list(ids) if ids else list(range(len(masks)))
        limit = self.settings.max_regions
        if len(masks) > limit:
            self.stats.regions_capped += len(masks) - limit
            self.get_logger().warning(
                f"{where}: {len(masks)} masks received, describing the first {limit} (max_regions)"
            )
            masks, ids = masks[:limit], ids[:limit]
        return [mask_to_bool(mask, i) for i, mask in enumerate(masks)], ids

    def _frame_features(self, stamp: int, image: CameraImage | None) -> tuple[EncodedFrame, np.ndarray | None]:
        """The frame's cached features (encoding it on first use) and its RGB pixels if they were decoded."""
        rgb = None

        def encode(msg: CameraImage) -> EncodedFrame:
            nonlocal rgb
            rgb = self._to_rgb(msg)
            return self.describer.encode(rgb)

        return self.frames.features_for(stamp, image, encode), rgb

    def _process_frame(self, pair: tuple[CameraImage, RegionMasks]) -> None:
        image_msg, masks_msg = pair
        stamp = stamp_ns(image_msg.header.stamp)
        where = f"frame {stamp / 1e9:.3f}"
        start = time.perf_counter()
        try:
            masks, ids = self._read_masks(list(masks_msg.masks), list(masks_msg.ids), where)
            frame, rgb = self._frame_features(stamp, image_msg)
            regions = self.describer.describe(frame, masks, ids)
        except (ImageConversionError, ValueError) as exc:
            self.stats.frame_errors += 1
            self.get_logger().error(f"{where}: {exc}")
            return
        elapsed = time.perf_counter() - start
        self.stats.frames_described += 1
        self.stats.latency_total_s += elapsed
        self.stats.latency_last_s = elapsed
        self.descriptions_pub.publish(self._descriptions_msg(image_msg, regions, elapsed))
        if self.overlay_pub is not None:
            rgb = rgb if rgb is not None else self._to_rgb(image_msg)
            self.overlay_pub.publish(numpy_to_image(draw_overlay(rgb, masks, regions), "rgb8", header=image_msg.header))

    def _descriptions_msg(
        self, image: CameraImage, regions: list[RegionResult], elapsed: float
    ) -> RegionDescriptionArray:
        out = RegionDescriptionArray(header=image.header, model_name=self.model_name, inference_time=float(elapsed))
        for region in regions:
            x, y, w, h = region.bbox
            out.regions.append(
                RegionDescription(
                    id=region.id,
                    label=region.label,
                    description=region.description,
                    bbox=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h),
                    area=region.area,
                )
            )
        return out

    def _answer(self, request: DescribeRegions.Request) -> tuple[list[str], int, str]:
        """Runs on the model thread. Returns answers, the frame's stamp and a note (e.g. about capping)."""
        if not request.masks:
            raise ValueError("empty request: send at least one mask, and an image or the stamp of a recent frame")
        if request.image.width and request.image.height:
            image: CameraImage | None = request.image
            stamp = stamp_ns(request.image.header.stamp)
            if stamp == 0:  # unstamped: answer it, but do not cache it under the stamp of "latest"
                rgb = image_to_rgb(request.image)
                frame = self.describer.encode(rgb)
            else:
                frame, _ = self._frame_features(stamp, image)
        else:
            wanted = stamp_ns(request.stamp)
            found = self.frames.find(wanted, int(self.settings.slop * 1e9))
            if found is None:
                have = self.frames.stamps()
                span = f"cached: {have[0] / 1e9:.3f}..{have[-1] / 1e9:.3f}" if have else "no frame cached yet"
                raise ValueError(f"no image in the request and no cached frame near stamp {wanted / 1e9:.3f} ({span})")
            stamp = found
            frame, _ = self._frame_features(stamp, None)
        capped_before = self.stats.regions_capped
        masks, _ = self._read_masks(list(request.masks), [], f"service request ({len(request.masks)} masks)")
        note = (
            f"capped: {len(request.masks)} masks received, answered the first {len(masks)} (max_regions)"
            if self.stats.regions_capped > capped_before
            else ""
        )
        answers = self.describer.answer(frame, masks, request.question, request.max_new_tokens)
        return answers, stamp, note

    def _on_describe(
        self, request: DescribeRegions.Request, response: DescribeRegions.Response
    ) -> DescribeRegions.Response:
        self.stats.service_calls += 1
        try:
            future = self.worker.submit(lambda: self._answer(request))
            answers, stamp, note = future.result(timeout=self.settings.service_timeout)
        except (ImageConversionError, ValueError, KeyError, WorkerBusy, TimeoutError) as exc:
            self.stats.service_errors += 1
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            if isinstance(exc, TimeoutError):
                message = f"the model did not answer within service_timeout={self.settings.service_timeout}s"
            self.get_logger().error(f"~/describe: {message}")
            response.success, response.message = False, message
            return response
        response.success, response.message, response.answers, response.stamp = True, note, answers, to_stamp(stamp)
        return response

    def _on_worker_error(self, exc: BaseException) -> None:
        self.stats.frame_errors += 1
        self.get_logger().error(f"unexpected error while describing a frame: {exc!r}")

    # ---- diagnostics ----------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        stats = self.stats
        rate = (stats.frames_described - self._described_at_last_report) / max(now - self._last_report, 1e-6)
        self._described_at_last_report, self._last_report = stats.frames_described, now
        mean_ms = 1000 * stats.latency_total_s / stats.frames_described if stats.frames_described else 0.0
        values = {
            "images_received": stats.images_received,
            "mask_sets_received": stats.mask_sets_received,
            "frames_matched": self.sync.stats.pairs,
            "images_unmatched": self.sync.stats.images_unused,
            "frames_described": stats.frames_described,
            "frames_dropped": self.worker.frames_dropped,
            "mask_sets_unmatched": self.sync.stats.masks_unmatched,
            "frame_errors": stats.frame_errors,
            "regions_capped": stats.regions_capped,
            "service_calls": stats.service_calls,
            "service_errors": stats.service_errors,
            "rate_hz": f"{rate:.2f}",
            "latency_ms_last": f"{1000 * stats.latency_last_s:.1f}",
            "latency_ms_mean": f"{mean_ms:.1f}",
            "frames_cached": len(self.frames.stamps()),
            "frames_encoded_for_service": self.frames.encoded,
        }
        level = DiagnosticStatus.WARN if stats.frame_errors or self.sync.stats.masks_unmatched else DiagnosticStatus.OK
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: pipeline",
            message=f"{rate:.2f} frames/s, {mean_ms:.0f} ms mean latency, {self.worker.frames_dropped} dropped",
            hardware_id=self.model_name,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        header = Header(stamp=self.get_clock().now().to_msg())
        self.diagnostics_pub.publish(DiagnosticArray(header=header, status=[status]))

    def destroy_node(self) -> None:
        self.worker.stop()
        super().destroy_node()


def spin_nodes(nodes: list[Node]) -> None:
    """Spin until Ctrl-C or shutdown; the model thread keeps the callbacks free, 4 threads serve them."""
    executor = MultiThreadedExecutor(num_threads=4)
    for node in nodes:
        executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        for node in nodes:
            node.destroy_node()


def create_node_or_exit(**kwargs) -> PerceptionNode:
    """The node, or a one-line fatal error (missing weights, bad parameter) and exit code 1."""
    try:
        return PerceptionNode(**kwargs)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        raise SystemExit(1) from exc


def main(args: list[str] | None = None) -> None:
    """Entry point for ``ros2 run`` / launch: standard ``--ros-args`` handling."""
    rclpy.init(args=args)
    try:
        spin_nodes([create_node_or_exit()])
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
