"""The shared training loop across stops and resumes, on a one-layer model: its metrics.csv, and that a run
stopped and resumed ends where one that never stopped does."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from run_stops import Stopped
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

import training.loop
from training.loop import DATA_STATE_FILE, LAST_CHECKPOINT, METRICS_FILE, TrainingLoop
from training.streams import ResumableRandomSampler, SeededBatches, SeededStream


class LineFit(TrainingLoop):
    """Fits y = 2x; ``stop_at`` raises in that step's loss, as a run killed there would stop."""

    def __init__(self, out: Path, steps: int, save_every: int = 0, stop_at: int | None = None) -> None:
        torch.manual_seed(0)
        self.line, self.stop_at = nn.Linear(1, 1), stop_at
        super().__init__(
            self.line, list(self.line.parameters()), out, total_steps=steps, learning_rate=0.1, warmup_steps=1,
            save_every=save_every,
        )  # fmt: skip

    def batches(self) -> Iterator[torch.Tensor]:
        while True:
            yield torch.linspace(-1, 1, 8)[:, None]

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        return self.line(batch)

    def compute_loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if self.step + 1 == self.stop_at:
            raise Stopped
        error = (self.predict(batch) - 2 * batch).pow(2).mean()
        return error, {"error": error.item()}

    def save_model(self, target: Path, final: bool) -> None:
        save_file({k: v.contiguous() for k, v in self.line.state_dict().items()}, target / "line.safetensors")

    def load_model(self, checkpoint: Path) -> None:
        self.line.load_state_dict(load_file(checkpoint / "line.safetensors"))


def logged_steps(out: Path) -> list[int]:
    with (out / METRICS_FILE).open(newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def test_a_run_stopped_before_its_first_step_logs_a_header_when_run_again(tmp_path: Path) -> None:
    with pytest.raises(Stopped):
        LineFit(tmp_path, steps=3, stop_at=1).train()
    assert (tmp_path / METRICS_FILE).read_text() == ""  # what such a stop leaves

    LineFit(tmp_path, steps=3).train()
    assert logged_steps(tmp_path) == [1, 2, 3]


def test_a_resumed_run_logs_each_step_once_and_counts_its_seconds_on(tmp_path: Path, monkeypatch) -> None:
    """The last row's ``seconds`` is the whole run's training time, across stops (a card reports it)."""
    ticks = iter(range(0, 10_000, 10))  # every reading of the clock is 10 s after the one before
    monkeypatch.setattr(training.loop, "time", SimpleNamespace(monotonic=lambda: float(next(ticks))))
    with pytest.raises(Stopped):
        LineFit(tmp_path, steps=6, save_every=2, stop_at=4).train()  # checkpoint at step 2, step 3 logged
    assert logged_steps(tmp_path) == [1, 2, 3]

    next(ticks)  # time passes between the stop and the resume
    resumed = LineFit(tmp_path, steps=6, save_every=2)
    resumed.train()
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]
    with (tmp_path / METRICS_FILE).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "loss", "error", "learning_rate", "seconds"]
    assert [float(row["seconds"]) for row in rows] == [10, 20, 30, 40, 50, 60]  # step 3 trained again


def test_a_fresh_start_does_not_append_to_an_old_log(tmp_path: Path) -> None:
    LineFit(tmp_path, steps=2).train()  # no checkpoint-last: a rerun starts over
    LineFit(tmp_path, steps=3).train()
    assert logged_steps(tmp_path) == [1, 2, 3]


class NoisyLineFit(SeededBatches, LineFit):
    """Fits y = 2x on points drawn from its own generator, through dropout: both draws must go on, not start
    over, when a run resumes."""

    def __init__(self, out: Path, steps: int, save_every: int = 0, stop_at: int | None = None) -> None:
        self.rng = np.random.default_rng(0)
        super().__init__(out, steps, save_every, stop_at)

    def batches(self) -> Iterator[torch.Tensor]:
        while True:
            yield torch.as_tensor(self.rng.uniform(-1, 1, (8, 1)), dtype=torch.float32)

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.line(batch), 0.5)


def test_a_stopped_and_resumed_run_ends_at_the_weights_of_one_that_never_stopped(tmp_path: Path) -> None:
    whole = NoisyLineFit(tmp_path / "whole", steps=6)
    whole.train()
    with pytest.raises(Stopped):
        NoisyLineFit(tmp_path / "stopped", steps=6, save_every=2, stop_at=4).train()
    assert (tmp_path / "stopped" / LAST_CHECKPOINT / DATA_STATE_FILE).is_file()
    resumed = NoisyLineFit(tmp_path / "stopped", steps=6, save_every=2)
    resumed.train()
    for name, value in whole.line.state_dict().items():
        torch.testing.assert_close(resumed.line.state_dict()[name], value, rtol=0, atol=0)


def test_a_seeded_stream_restored_mid_draw_hands_out_the_rest_of_it() -> None:
    def draw(rng: np.random.Generator) -> list[int]:
        return [int(v) for v in rng.integers(1000, size=int(rng.integers(4)))]  # 0 to 3 items a draw

    stream = SeededStream(7, draw)
    taken = [next(stream) for _ in range(5)]
    while not 0 < stream.state_dict()["taken"] < len(stream._pending):  # stop inside a draw of several
        taken.append(next(stream))
    state = stream.state_dict()
    expected = [next(stream) for _ in range(20)]

    restored = SeededStream(7, draw)
    restored.load_state_dict(state)
    assert [next(restored) for _ in range(20)] == expected
    fresh = SeededStream(7, draw)
    assert [next(fresh) for _ in range(len(taken) + 20)][len(taken) :] == expected


def test_the_resumable_sampler_shuffles_as_shuffle_true_does_and_restores_mid_epoch() -> None:
    """Osprey's trainer swapped ``shuffle=True`` for it: the same order (a run's data, and the shipped tiny
    models' weights, stay what they were), and a restored one hands out the rest of its epoch, then the next."""
    records = list(range(10))

    def epochs(loader: DataLoader, count: int, sampler: ResumableRandomSampler | None = None) -> list[list[int]]:
        order = []
        for _ in range(count):
            if sampler is not None:
                sampler.start_epoch()
            order.append([int(i) for batch in loader for i in batch])
        return order

    plain = DataLoader(records, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(5))
    expected = epochs(plain, 3)
    assert expected[0] != expected[1] and sorted(expected[1]) == records

    def resumable() -> tuple[DataLoader, ResumableRandomSampler]:
        generator = torch.Generator().manual_seed(5)
        sampler = ResumableRandomSampler(records, generator)
        return DataLoader(records, batch_size=3, sampler=sampler, generator=generator), sampler

    loader, sampler = resumable()
    assert epochs(loader, 3, sampler) == expected

    loader, sampler = resumable()
    epochs(loader, 1, sampler)
    sampler.start_epoch()
    batches = iter(loader)
    for _ in range(2):  # two batches of the second epoch, then the run stops
        next(batches)
        sampler.taken += 3
    state = json.loads(json.dumps(sampler.state_dict()))

    loader, sampler = resumable()
    sampler.load_state_dict(state)
    rest = epochs(loader, 2, sampler)
    assert rest == [expected[1][6:], expected[2]]
