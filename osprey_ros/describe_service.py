"""``~/describe``: a question about regions of a cached camera frame or of an image sent with the request.

The callback never waits for the model: it queues the work on the model thread (which takes turns with
camera frames) and returns a ``DeferredReply``; the answer, or a clear error ("busy", "timed out", bad
input), is sent from the model thread when it is ready. Every request gets a reply.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING

from osprey_interfaces.srv import DescribeRegions
from sensor_msgs.msg import Image

from osprey_model import EncodedFrame

from .deferred_service import DeferredReply, create_deferred_service
from .image_conversion import ImageConversionError, image_to_rgb
from .model_worker import WorkerBusy
from .stamps import stamp_ns, to_stamp

if TYPE_CHECKING:
    from .perception_node import PerceptionNode


def same_image(a: Image, b: Image) -> bool:
    return (a.height, a.width, a.encoding, a.step) == (b.height, b.width, b.encoding, b.step) and bytes(
        a.data
    ) == bytes(b.data)


class DescribeService:
    def __init__(self, node: PerceptionNode) -> None:
        self.node = node
        self.frames_encoded = 0  # images sent with a request that had to be encoded
        self.service = create_deferred_service(node, DescribeRegions, "~/describe", self._on_request)

    def _on_request(
        self, request: DescribeRegions.Request, response: DescribeRegions.Response
    ) -> DescribeRegions.Response | DeferredReply:
        """Executor thread: validate cheaply, queue, return at once."""
        node = self.node
        pipeline = node.pipeline
        if pipeline is None or not node.active:
            return self._error(response, "the node is not active (lifecycle): activate it first")
        pipeline.stats.service_calls += 1
        if not request.masks:
            return self._error(
                response, "empty request: send at least one mask, and an image or the stamp of a recent frame"
            )
        try:
            future = pipeline.worker.submit(lambda: self._answer(request), timeout=node.settings.service_timeout)
        except WorkerBusy as exc:
            return self._error(response, str(exc))
        except Exception as exc:  # never let a request end the executor's spin
            return self._error(response, f"internal error: {exc!r}")
        reply = DeferredReply()
        reply.complete_from(future, lambda done: self._response(done, response))
        return reply

    def _response(self, done: Future, response: DescribeRegions.Response) -> DescribeRegions.Response:
        """Model thread (or the caller of ``future.cancel``): the answer, or any error as a message."""
        if done.cancelled():
            return self._error(response, "the node is shutting down")
        exc = done.exception()
        if exc is None:
            answers, stamp, note = done.result()
            response.success, response.message, response.answers = True, note, answers
            response.stamp = to_stamp(stamp)
            return response
        if isinstance(exc, KeyError) and exc.args:
            message = str(exc.args[0])
        elif isinstance(exc, ImageConversionError | ValueError | TimeoutError):
            message = str(exc)
        else:  # MemoryError and the unforeseen: the node answers and keeps serving
            message = f"internal error: {exc!r}"
        return self._error(response, message)

    def _error(self, response: DescribeRegions.Response, message: str) -> DescribeRegions.Response:
        pipeline = self.node.pipeline
        if pipeline is not None:
            pipeline.stats.service_errors += 1
        self.node.get_logger().error(f"~/describe: {message}")
        response.success, response.message = False, message
        return response

    def _frame(self, request: DescribeRegions.Request) -> tuple[EncodedFrame, int]:
        """Model thread: the features of the sent image (cached frame if it is the same image) or of a
        cached frame near ``request.stamp``."""
        node = self.node
        pipeline = node._configured()
        if request.image.width and request.image.height:
            stamp = stamp_ns(request.image.header.stamp)
            key = pipeline.frames.find_same(stamp, request.image, same_image) if stamp else None
            if key is not None:
                return node.frame_features(key, request.image)[0], stamp
            self.frames_encoded += 1
            frame = pipeline.describer.encode(image_to_rgb(request.image))
            return frame, stamp  # not cached: only camera frames are
        wanted = stamp_ns(request.stamp)
        key = pipeline.frames.find(wanted, int(node.settings.slop * 1e9))
        if key is None:
            have = pipeline.frames.stamps()
            span = f"cached: {have[0] / 1e9:.3f}..{have[-1] / 1e9:.3f}" if have else "no frame cached yet"
            raise ValueError(f"no image in the request and no cached frame near stamp {wanted / 1e9:.3f} ({span})")
        return node.frame_features(key, None)[0], pipeline.frames.stamp_of(key)

    def _answer(self, request: DescribeRegions.Request) -> tuple[list[str], int, str]:
        """Model thread. Returns answers, the frame's stamp and a note (e.g. about capping)."""
        node = self.node
        pipeline = node._configured()
        frame, stamp = self._frame(request)
        capped_before = pipeline.stats.regions_capped
        masks, _ = node.read_masks(list(request.masks), [], f"service request ({len(request.masks)} masks)")
        note = (
            f"capped: {len(request.masks)} masks received, answered the first {len(masks)} (max_regions)"
            if pipeline.stats.regions_capped > capped_before
            else ""
        )
        answers = pipeline.describer.answer(frame, masks, request.question, request.max_new_tokens)
        return answers, stamp, note
