"""Endless training streams drawn from one numpy generator, whose place a checkpoint can hold.

A stream that restarts from its seed when a run resumes makes the resumed run read its first items a second
time: it is no longer the run the command describes, and two runs of one command stopped at different steps
end at different weights. A ``SeededStream`` saves the generator's state with the checkpoint, and a resumed
run reads on from where the stopped one was. A ``ResumableRandomSampler`` does the same for a DataLoader's
epochs of shuffled records.
"""

from __future__ import annotations

import base64
import itertools
import math
from collections.abc import Callable, Iterator, Sized
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch.utils.data import RandomSampler

from . import ranks

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


class ResumableRandomSampler(RandomSampler):
    """``DataLoader(shuffle=True, generator=g)``'s order, resumable inside an epoch, and split between ranks.

    Give the loader this sampler and the same generator (it draws its workers' base seed from it before the
    sampler's permutation, as with ``shuffle=True``). ``state_dict`` is the generator as the current epoch
    began plus the records handed out since; a restored sampler draws that epoch's permutation again and
    passes over those records without loading them. Under several ranks (same seed on each) every rank draws
    the same permutation and takes every ``world_size``-th record of it from its own rank on, padded with the
    first ones as ``DistributedSampler`` pads, so that every rank takes as many steps.
    """

    def __init__(
        self, data_source: Sized, generator: torch.Generator, rank: int | None = None, world_size: int | None = None
    ) -> None:
        super().__init__(data_source, generator=generator)
        self.rank = ranks.rank() if rank is None else rank
        self.world_size = ranks.world_size() if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not one of {self.world_size} ranks")
        self.epoch_start = generator.get_state()
        self.taken = 0  # indices of this epoch handed out (the trainer counts them as its batches arrive)
        self._skip = 0

    def start_epoch(self) -> None:
        """Call before iterating the loader: the loader's first draw belongs to the epoch."""
        assert self.generator is not None
        self.epoch_start = self.generator.get_state()
        self.taken = self._skip  # a restored epoch counts the records it passes over as handed out

    def __len__(self) -> int:
        return math.ceil(len(self.data_source) / self.world_size)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        order: Iterator[int] = super().__iter__()
        if self.world_size > 1:
            whole = list(order)
            padding = len(self) * self.world_size - len(whole)
            whole += (whole * math.ceil(padding / len(whole)))[:padding]
            order = iter(whole[self.rank :: self.world_size])
        return itertools.islice(order, skip, None)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able: the generator's state (bytes) as base64."""
        return {"epoch_generator": base64.b64encode(self.epoch_start.numpy().tobytes()).decode(), "taken": self.taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.generator is not None
        raw = np.frombuffer(base64.b64decode(state["epoch_generator"]), dtype=np.uint8).copy()
        self.generator.set_state(torch.from_numpy(raw))
        self._skip = int(state["taken"])
