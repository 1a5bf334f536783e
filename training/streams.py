"""Endless training streams drawn from one numpy generator, whose place a checkpoint can hold.

A stream that restarts from its seed when a run resumes makes the resumed run read its first items a second
time: it is no longer the run the command describes, and two runs of one command stopped at different steps
end at different weights. A ``SeededStream`` saves the generator's state with the checkpoint, and a resumed
run reads on from where the stopped one was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")


class SeededStream(Iterator[T], Generic[T]):
    """Items from ``draw(rng)``, called again whenever the items of its last call are used up.

    ``draw`` may return several items (a record with three questions) or none (a record that was skipped); the
    state is the generator before the pending draw plus how many of its items were taken, so a restored
    stream draws that record again and hands out the rest of it, whatever it holds.
    """

    def __init__(self, seed: int, draw: Callable[[np.random.Generator], list[T]]) -> None:
        self.rng = np.random.default_rng(seed)
        self.draw = draw
        self._before_pending: dict[str, Any] = dict(self.rng.bit_generator.state)
        self._pending: list[T] = []
        self._taken = 0

    def __iter__(self) -> SeededStream[T]:
        return self

    def __next__(self) -> T:
        while self._taken >= len(self._pending):
            self._before_pending = dict(self.rng.bit_generator.state)
            self._pending, self._taken = self.draw(self.rng), 0
        self._taken += 1
        return self._pending[self._taken - 1]

    def state_dict(self) -> dict[str, Any]:
        """JSON-able (a PCG64 state is two Python ints). A used-up draw is not drawn again on restore: that
        would read its record once more (an image from disk, which may fail this time)."""
        if self._taken >= len(self._pending):
            return {"generator": dict(self.rng.bit_generator.state), "taken": 0}
        return {"generator": self._before_pending, "taken": self._taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["generator"]
        self._before_pending, self._pending, self._taken = state["generator"], [], 0
        if state["taken"]:
            self._pending, self._taken = self.draw(self.rng), int(state["taken"])


class SeededBatches:
    """For a ``TrainingLoop`` that draws its batches from its own ``self.rng``: the checkpoint holds that
    generator's state (``data_state``), and a resumed run draws on from it."""

    rng: np.random.Generator

    def data_state(self) -> dict[str, Any] | None:
        return {"generator": self.rng.bit_generator.state}

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["generator"]
