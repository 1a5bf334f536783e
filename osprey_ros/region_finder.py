"""``~/find_region``'s two parts without ROS: the last described frames kept by stamp, and ranking their
regions against a text query by sentence-embedding similarity (then, optionally, by the model's yes/no)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from std_msgs.msg import Header

from osprey_model.text_embedding import EmbedFn

from .region_describer import RegionResult


@dataclass(frozen=True)
class DescribedFrame:
    stamp: int
    header: Header
    regions: list[RegionResult]
    masks: list[np.ndarray]  # one per region, in the same order


class DescribedFrames:
    """The newest ``size`` described frames (executor and model thread both read: locked)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._frames: OrderedDict[int, DescribedFrame] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, frame: DescribedFrame) -> None:
        with self._lock:
            self._frames[frame.stamp] = frame
            self._frames.move_to_end(frame.stamp)
            while len(self._frames) > self.size:
                self._frames.popitem(last=False)

    def find(self, stamp: int, slop_ns: int) -> DescribedFrame:
        """The frame at ``stamp`` (within slop); stamp 0 = the newest. ValueError says what is there."""
        with self._lock:
            if not self._frames:
                raise ValueError("no frame described yet: wait for ~/descriptions")
            if stamp == 0:
                return next(reversed(self._frames.values()))
            best = min(self._frames, key=lambda s: abs(s - stamp))
            if abs(best - stamp) > slop_ns:
                have = list(self._frames)
                raise ValueError(
                    f"no described frame near stamp {stamp / 1e9:.3f} (kept: {have[0] / 1e9:.3f}..{have[-1] / 1e9:.3f})"
                )
            return self._frames[best]


def region_text(region: RegionResult) -> str:
    """What a region is called, for matching: its label and typed attributes ("red circle; circle; red")."""
    parts = [region.label, *(value for value in region.attributes.values() if value)]
    return "; ".join(dict.fromkeys(part.strip() for part in parts if part.strip()))


def rank_by_similarity(query: str, regions: list[RegionResult], embed: EmbedFn) -> list[tuple[int, float]]:
    """(region index, cosine similarity) best first."""
    if not regions:
        return []
    vectors = embed([query, *(region_text(region) for region in regions)])
    similarity = vectors[1:] @ vectors[0]
    order = np.argsort(-similarity, kind="stable")
    return [(int(i), float(similarity[i])) for i in order]


def yes_probability(answer: str, confidence: float) -> float:
    """P(yes) from a short answer and its confidence: "Yes" at 0.9 → 0.9, "No" at 0.9 → 0.1; anything
    else (the model did not answer yes or no) → 0.5."""
    word = answer.strip().lower()
    if word.startswith("yes"):
        return confidence
    if word.startswith("no"):
        return 1.0 - confidence
    return 0.5
