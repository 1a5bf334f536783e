"""Services that answer later, from another thread, without holding an executor thread meanwhile.

rclpy has no deferred response (rclcpp does). An ``async`` callback that awaits a future does not help:
the executor re-runs pending tasks on every wake-up, a busy loop. Here the callback hands the work away
and returns a ``DeferredReply``; the executor then "sends" it, which only records where the reply must
go, and the real response is sent when the work is done, whichever of the two happens first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from rclpy._rclpy_pybind11 import RCLError
from rclpy.exceptions import InvalidHandle
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

# Requests taken from DDS as they come; a burst beyond the default depth of 10 lost requests silently.
SERVICE_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


class DeferredReply:
    """Stands in for the response until ``complete`` builds the real one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._header: Any = None
        self._response: Any = None
        self._send: Callable[[Any, Any], None] | None = None

    def _bind(self, send: Callable[[Any, Any], None], header: Any) -> None:
        with self._lock:
            self._send, self._header = send, header
            response = self._response
        if response is not None:
            send(response, header)

    def complete(self, response: Any) -> None:
        with self._lock:
            self._response = response
            send, header = self._send, self._header
        if send is not None:
            send(response, header)

    def complete_from(self, future: Future, build: Callable[[Future], Any]) -> None:
        """Complete with ``build(future)`` once ``future`` is done (on the thread that finishes it)."""
        future.add_done_callback(lambda done: self.complete(build(done)))


def create_deferred_service(
    node: Node, srv_type: Any, name: str, callback: Callable[[Any, Any], Any], **kwargs: Any
) -> Any:
    """``node.create_service`` whose callback may return a ``DeferredReply`` instead of the response."""
    service = node.create_service(srv_type, name, callback, qos_profile=SERVICE_QOS, **kwargs)
    send = service.send_response

    def send_now(response: Any, header: Any) -> None:
        try:
            send(response, header)
        except (InvalidHandle, RCLError):  # the service was destroyed meanwhile (cleanup, shutdown)
            node.get_logger().warning(f"{name}: a reply could not be sent, the service is gone")

    def send_response(response: Any, header: Any) -> None:
        if isinstance(response, DeferredReply):
            response._bind(send_now, header)
        else:
            send_now(response, header)

    service.send_response = send_response  # type: ignore[method-assign]  # the executor calls it after the callback
    return service
