"""Stopping a training run mid-way in a test, as a crash or a Ctrl-C would."""

from __future__ import annotations

from typing import Any


class Stopped(Exception):
    """Stands for a crash or a Ctrl-C in the middle of a run."""


def stop_before_step(trainer: Any, step: int) -> None:
    """Make ``trainer`` (a ``TrainingLoop``) stop in the loss of ``step`` (1-based), as a run killed there would."""
    compute_loss = trainer.compute_loss

    def stopping(batch: Any) -> Any:
        if trainer.step + 1 == step:
            raise Stopped
        return compute_loss(batch)

    trainer.compute_loss = stopping
