"""The shared training loop's metrics.csv across stops and resumes, on a one-layer model."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from training.loop import METRICS_FILE, TrainingLoop


class Stopped(Exception):
    """Stands for a crash or a Ctrl-C in the middle of a run."""


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

    def compute_loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if self.step + 1 == self.stop_at:
            raise Stopped
        error = (self.line(batch) - 2 * batch).pow(2).mean()
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


def test_a_resumed_run_logs_each_step_once(tmp_path: Path) -> None:
    with pytest.raises(Stopped):
        LineFit(tmp_path, steps=6, save_every=2, stop_at=4).train()  # checkpoint at step 2, step 3 logged
    assert logged_steps(tmp_path) == [1, 2, 3]

    resumed = LineFit(tmp_path, steps=6, save_every=2)
    resumed.train()
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]
    with (tmp_path / METRICS_FILE).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "loss", "error", "learning_rate", "seconds"]


def test_a_fresh_start_does_not_append_to_an_old_log(tmp_path: Path) -> None:
    LineFit(tmp_path, steps=2).train()  # no checkpoint-last: a rerun starts over
    LineFit(tmp_path, steps=3).train()
    assert logged_steps(tmp_path) == [1, 2, 3]
