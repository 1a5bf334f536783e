"""The one thread that runs the model, so no executor thread ever waits on it.

Camera frames go through a latest-frame-wins slot: a newer frame replaces a pending one, which is counted
as dropped, so memory holds at most one pending frame however slow the model is. Service requests wait in
a short FIFO and go first.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

FrameT = TypeVar("FrameT")


class WorkerBusy(RuntimeError):
    """Too many service requests are already waiting."""


class ModelWorker(Generic[FrameT]):
    def __init__(
        self,
        process_frame: Callable[[FrameT], None],
        on_error: Callable[[BaseException], None],
        max_pending_requests: int = 8,
    ) -> None:
        self._process_frame = process_frame
        self._on_error = on_error
        self._cond = threading.Condition()
        self._frame: FrameT | None = None
        self._requests: deque[tuple[Callable[[], Any], Future]] = deque()
        self._max_requests = max_pending_requests
        self._stopped = False
        self.frames_dropped = 0
        self.frames_done = 0
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

    def submit(self, job: Callable[[], Any]) -> Future:
        """Run ``job`` on the model thread before any pending frame; its result comes through the future."""
        future: Future = Future()
        with self._cond:
            if len(self._requests) >= self._max_requests:
                raise WorkerBusy(f"{len(self._requests)} requests are already waiting for the model")
            self._requests.append((job, future))
            self._cond.notify()
        return future

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def pending_frame(self) -> bool:
        return self._frame is not None

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopped or self._requests or self._frame is not None)
                if self._stopped:
                    for _, future in self._requests:
                        future.cancel()
                    return
                request = self._requests.popleft() if self._requests else None
                frame, self._frame = (None, self._frame) if request else (self._frame, None)
            if request is not None:
                self._answer(*request)
            elif frame is not None:
                self._describe(frame)

    @staticmethod
    def _answer(job: Callable[[], Any], future: Future) -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)

    def _describe(self, frame: FrameT) -> None:
        try:
            self._process_frame(frame)
        except Exception as exc:  # a bad frame must not end the thread
            self._on_error(exc)
        finally:
            self.frames_done += 1
