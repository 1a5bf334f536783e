"""What every service answered by the model thread shares: the request flow and the frame a request names.

The callback never waits for the model: it checks the request cheaply, queues the work on the model
thread (which takes turns with camera frames) and returns a ``DeferredReply``; the answer, or a clear error
("busy", "timed out", bad input), is sent from the model thread when it is ready. Every request gets a
reply, and no error ends the executor's spin.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from osprey_model import FrameFeatures

from .deferred_service import DeferredReply, create_deferred_service
from .image_conversion import ImageConversionError, image_to_rgb
from .model_worker import WorkerBusy
from .stamps import stamp_ns

if TYPE_CHECKING:
    from .perception_node import PerceptionNode


def same_image(a: Image | CompressedImage, b: Image) -> bool:
    """Whether a cached camera frame (raw or compressed) is the image a request sent (always raw)."""
    if not isinstance(a, Image):
        return False
    return (a.height, a.width, a.encoding, a.step) == (b.height, b.width, b.encoding, b.step) and bytes(
        a.data
    ) == bytes(b.data)


class ModelService:
    """A service whose work runs on the model thread. Subclasses say what to ``check`` on the executor
    thread and what to ``run`` on the model thread; ``run`` returns the filled response fields."""

    srv_type: Any
    name: str

    def __init__(self, node: PerceptionNode) -> None:
        self.node = node
        self.frames_encoded = 0  # images sent with a request that were not a cached camera frame
        self.service = create_deferred_service(node, self.srv_type, self.name, self._on_request)

    def check(self, request: Any) -> str | None:
        """Executor thread: an error message for a request not worth queueing, else None."""
        return None

    def run(self, request: Any) -> tuple[dict[str, Any], Header]:
        """Model thread: the response's fields (besides success and stamp) and the answered frame's header."""
        raise NotImplementedError

    def _on_request(self, request: Any, response: Any) -> Any:
        """Executor thread: validate cheaply, queue, return at once. No error escapes: rclpy would end the
        executor's spin, and with it the node."""
        try:
            return self._queue(request)
        except Exception as exc:
            return self._error(f"internal error: {exc!r}")

    def _queue(self, request: Any) -> Any:
        node = self.node
        pipeline = node.pipeline
        if pipeline is None or not node.active:
            return self._error("the node is not active (lifecycle): activate it first")
        pipeline.stats.service_calls += 1
        problem = self.check(request)
        if problem:
            return self._error(problem)
        try:
            future = pipeline.worker.submit(lambda: self.run(request), timeout=node.settings.service_timeout)
        except WorkerBusy as exc:
            return self._error(str(exc))
        reply = DeferredReply()
        reply.complete_from(future, self._response)
        return reply

    def _response(self, done: Future) -> Any:
        """Model thread (or the caller of ``future.cancel``): the answer, or any error as a message."""
        if done.cancelled():
            return self._error("the node is shutting down")
        exc = done.exception()
        if exc is None:
            try:
                fields, header = done.result()
                return self.srv_type.Response(success=True, stamp=header.stamp, **fields)
            except Exception as build_error:  # an answer that does not fit the message must still be answered
                exc = build_error
        if isinstance(exc, KeyError) and exc.args:
            message = str(exc.args[0])
        elif isinstance(exc, ImageConversionError | ValueError | TimeoutError):
            message = str(exc)
        else:  # MemoryError and the unforeseen: the node answers and keeps serving
            message = f"internal error: {exc!r}"
        return self._error(message)

    def _error(self, message: str) -> Any:
        pipeline = self.node.pipeline
        if pipeline is not None:
            pipeline.stats.service_errors += 1
        self.node.get_logger().error(f"{self.name}: {message}")
        return self.srv_type.Response(success=False, message=message)

    def frame(self, image: Image, stamp: Time) -> tuple[FrameFeatures, Header]:
        """Model thread: the sent image (the cached camera frame if it is the same image) or a cached frame
        near ``stamp``; with the frame's header."""
        node = self.node
        pipeline = node._configured()
        if image.width and image.height:
            sent_stamp = stamp_ns(image.header.stamp)
            key = pipeline.frames.find_same(sent_stamp, image, same_image) if sent_stamp else None
            if key is not None:
                return node.frame_features(key, image), image.header
            self.frames_encoded += 1
            return FrameFeatures(image_to_rgb(image)), image.header  # not cached: only camera frames are
        wanted = stamp_ns(stamp)
        key = pipeline.frames.find(wanted, int(node.settings.slop * 1e9))
        if key is None:
            have = pipeline.frames.stamps()
            span = f"cached: {have[0] / 1e9:.3f}..{have[-1] / 1e9:.3f}" if have else "no frame cached yet"
            raise ValueError(f"no image in the request and no cached frame near stamp {wanted / 1e9:.3f} ({span})")
        header = pipeline.frames.image_of(key).header  # before the features: the frame may leave the cache
        return node.frame_features(key, None), header
