"""The one thread that runs the model, so no executor thread ever waits on it.

Camera frames go through a latest-frame-wins slot: a newer frame replaces a pending one, which is counted
as dropped, so memory holds at most one pending frame however slow the model is. Service requests wait in
a bounded FIFO with a deadline each. When both are waiting the worker alternates between them, so a burst
of requests cannot stop the camera pipeline and a busy camera cannot starve the service; a request whose
deadline passed while it waited is answered with ``RequestExpired`` instead of being run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

FrameT = TypeVar("FrameT")


class WorkerBusy(RuntimeError):
    """Too many service requests are already waiting."""


class RequestExpired(TimeoutError):
    """A request waited past its deadline before the model could take it."""


@dataclass
class _Request:
    job: Callable[[], Any]
    future: Future
    deadline: float  # time.monotonic()
    queued_at: float


class ModelWorker(Generic[FrameT]):
    def __init__(
        self,
        process_frame: Callable[[FrameT], None],
        on_error: Callable[[BaseException], None],
        max_pending_requests: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._process_frame = process_frame
        self._on_error = on_error
        self._clock = clock
        self._cond = threading.Condition()
        self._frame: FrameT | None = None
        self._requests: deque[_Request] = deque()
        self._max_requests = max_pending_requests
        self._last_was_request = False
        self._stopped = False
        self.frames_dropped = 0
        self.frames_done = 0
        self.requests_expired = 0
        self._thread = threading.Thread(target=self._run, name="osprey-model", daemon=True)
        self._thread.start()

    def submit_frame(self, frame: FrameT) -> bool:
        """Queue a frame; True when it replaced a pending one (that one is dropped)."""
        with self._cond:
            replaced = self._frame is not None
            self.frames_dropped += replaced
            self._frame = frame
            self._cond.notify()
            return replaced

    def submit(self, job: Callable[[], Any], timeout: float) -> Future:
        """Run ``job`` on the model thread; its result (or error) comes through the future.

        Raises ``WorkerBusy`` at once when ``max_pending_requests`` are already waiting. A job still
        waiting ``timeout`` seconds from now is not run: its future gets ``RequestExpired``.
        """
        future: Future = Future()
        now = self._clock()
        with self._cond:
            if self._stopped:
                raise WorkerBusy("the model is shutting down")
            if len(self._requests) >= self._max_requests:
                raise WorkerBusy(f"busy: {len(self._requests)} requests are already waiting for the model")
            self._requests.append(_Request(job, future, now + timeout, now))
            self._cond.notify()
        return future

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the job in hand, cancel what waits, end the thread."""
        with self._cond:
            self._stopped = True
            self._frame = None
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def pending_frame(self) -> bool:
        return self._frame is not None

    @property
    def pending_requests(self) -> int:
        with self._cond:
            return len(self._requests)

    def _next(self) -> tuple[_Request | None, FrameT | None]:
        """Called under the lock once there is work: a request or a frame, taking turns when both wait."""
        take_request = bool(self._requests) and (self._frame is None or not self._last_was_request)
        self._last_was_request = take_request
        if take_request:
            return self._requests.popleft(), None
        frame, self._frame = self._frame, None
        return None, frame

    def _run(self) -> None:
        request: _Request | None
        frame: FrameT | None
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopped or self._requests or self._frame is not None)
                if self._stopped:
                    for request in self._requests:
                        request.future.cancel()
                    self._requests.clear()
                    return
                request, frame = self._next()
            if request is not None:
                self._answer(request)
            elif frame is not None:
                self._describe(frame)

    def _answer(self, request: _Request) -> None:
        if not request.future.set_running_or_notify_cancel():
            return
        now = self._clock()
        if now > request.deadline:
            self.requests_expired += 1
            waited = now - request.queued_at
            request.future.set_exception(RequestExpired(f"timed out: waited {waited:.1f} s for the model"))
            return
        try:
            request.future.set_result(request.job())
        except BaseException as exc:  # handed to the caller, whatever it is (MemoryError included)
            request.future.set_exception(exc)

    def _describe(self, frame: FrameT) -> None:
        try:
            self._process_frame(frame)
        except Exception as exc:  # a bad frame must not end the thread
            self._on_error(exc)
        finally:
            self.frames_done += 1
