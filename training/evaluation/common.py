"""What every protocol shares: the model under test, its answers, and where they are written.

Each protocol writes ``answers.jsonl`` (one line per item as it is answered: what was asked, what came
back, what was expected, the item's scores), ``scores.json`` and ``table.md`` (the paper's table layout)
into ``--out``; region captioning adds ``item_scores.jsonl`` (each region's CIDEr, known only at the end).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from osprey_model import OspreyPredictor
from osprey_model.predictor import FrameInput

# The released evaluation asks at most this many regions of one image (its query count).
MAX_REGIONS_PER_IMAGE = 300


@dataclass
class Generation:
    """How answers are generated. The released scripts sample at temperature 0.2; greedy is the default
    here so a table can be regenerated exactly."""

    max_new_tokens: int
    temperature: float = 0.0


def ask_regions(
    predictor: OspreyPredictor,
    frame: FrameInput,
    masks: Sequence[np.ndarray],
    question: str,
    generation: Generation,
) -> list[str]:
    """One answer per region, all of an image's regions in one batched pass over a shared prefix."""
    if not masks:
        return []
    return predictor.describe(
        frame, list(masks), prompt=question, max_new_tokens=generation.max_new_tokens,
        temperature=generation.temperature,
    )  # fmt: skip


def after_colon(answer: str) -> str:
    """The released scripts keep what follows a colon ("Category: dog" → "dog")."""
    return answer.split(":")[1] if ":" in answer else answer


class ResultWriter:
    """``answers.jsonl`` grows line by line, so an interrupted run keeps what it answered."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self._answers = (out_dir / "answers.jsonl").open("w")

    def answer(self, **item: Any) -> None:
        self._answers.write(json.dumps(item, default=_plain) + "\n")
        self._answers.flush()

    def item_scores(self, rows: list[dict[str, Any]]) -> None:
        """Per-item scores that exist only once the whole set is scored (a corpus metric's parts)."""
        (self.out_dir / "item_scores.jsonl").write_text("".join(json.dumps(r, default=_plain) + "\n" for r in rows))

    def finish(self, scores: dict[str, Any], table: str) -> None:
        self._answers.close()
        (self.out_dir / "scores.json").write_text(json.dumps(scores, indent=2, default=_plain) + "\n")
        (self.out_dir / "table.md").write_text(table.rstrip() + "\n")

    def close(self) -> None:
        self._answers.close()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@dataclass
class Table:
    """A markdown table in the paper's layout: one row per model or split, metric columns."""

    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, name: str, values: Iterable[float | int | str], scale: float = 100.0) -> None:
        cells = [name]
        for value in values:
            if isinstance(value, str):
                cells.append(value)
            elif isinstance(value, int):
                cells.append(str(value))
            else:
                cells.append("n/a" if value != value else f"{scale * value:.2f}")
        self.rows.append(cells)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def set_seed(seed: int) -> None:
    """Sampling (``--temperature`` > 0) is reproducible for a seed."""
    torch.manual_seed(seed)
    np.random.seed(seed)
