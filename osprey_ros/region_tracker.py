"""Stable region ids across frames, and descriptions reused while a region's mask barely changes.

A region is the same as one of the last frames' when their masks overlap (IoU at least ``match_iou``,
greedy, best pairs first) and, when the mask source names classes, their classes agree; it keeps that id.
Ids the mask source gives win: then the id is the match. A
matched region whose mask is still close to the one it was described with (IoU at least ``reuse_iou``)
and was described fewer than ``reuse_max_age`` frames ago keeps its text, and the language model is not
asked again: on a static scene most regions cost nothing. Regions unseen for ``max_missed`` frames are
forgotten (a region coming back later gets a new id, unless the mask source names it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from osprey_model.image_processing import check_region_mask

from .region_describer import RegionResult, mask_box


@dataclass(frozen=True)
class TrackerConfig:
    match_iou: float = 0.3
    reuse_iou: float = 0.85
    reuse_max_age: int = 10  # frames; 0 = every region is described every frame
    max_missed: int = 30  # frames


@dataclass
class _Track:
    id: int
    mask: np.ndarray  # the last frame's mask
    box: Box
    label_class: str = ""  # the mask source's class, "" = not given
    described: RegionResult | None = None
    described_mask: np.ndarray | None = None
    described_age: int = 0  # frames since it was described
    missed: int = 0


@dataclass
class TrackerStats:
    described: int = 0
    reused: int = 0
    tracks_started: int = 0


@dataclass
class Assignment:
    """One mask of the frame: its id, and its earlier description when that still holds."""

    id: int
    reused: RegionResult | None


@dataclass
class RegionTracker:
    config: TrackerConfig = field(default_factory=TrackerConfig)
    stats: TrackerStats = field(default_factory=TrackerStats)

    def __post_init__(self) -> None:
        self._tracks: dict[int, _Track] = {}
        self._next_ids = itertools.count()

    def assign(
        self, masks: list[np.ndarray], given_ids: list[int] | None = None, classes: list[str] | None = None
    ) -> list[Assignment]:
        """Ids for this frame's masks (``given_ids`` from the mask source win) and what may be reused."""
        boxes = [mask_box(mask) for mask in masks]
        classes = classes or [""] * len(masks)
        ids = list(given_ids) if given_ids else self._match(masks, boxes, classes)
        assignments = []
        for mask, box, region_id, label_class in zip(masks, boxes, ids, classes, strict=True):
            track = self._tracks.get(region_id)
            reused = None
            same_class = track is not None and _compatible(track.label_class, label_class)
            if same_class and track is not None and track.described is not None and track.described_mask is not None:
                fresh = track.described_age < self.config.reuse_max_age
                close = mask_iou(mask, track.described_mask, box, track.described.bbox) >= self.config.reuse_iou
                if fresh and close:
                    reused = replace(track.described, id=region_id, bbox=box, area=int(mask.sum()), reused=True)
            assignments.append(Assignment(region_id, reused))
        return assignments

    def update(
        self,
        masks: list[np.ndarray],
        regions: list[RegionResult],
        reused: list[bool],
        classes: list[str] | None = None,
    ) -> None:
        """After the frame is described: remember each region's mask, class (and new text), age the rest."""
        seen = set()
        classes = classes or [""] * len(masks)
        for mask, region, was_reused, label_class in zip(masks, regions, reused, classes, strict=True):
            track = self._tracks.get(region.id)
            if track is None:
                track = self._tracks[region.id] = _Track(region.id, mask, region.bbox)
                self.stats.tracks_started += 1
            track.mask, track.box, track.missed, track.label_class = mask, region.bbox, 0, label_class
            if was_reused:
                track.described_age += 1
                self.stats.reused += 1
            else:
                track.described, track.described_mask, track.described_age = region, mask, 1
                self.stats.described += 1
            seen.add(region.id)
        for region_id in list(self._tracks):
            if region_id not in seen:
                track = self._tracks[region_id]
                track.missed += 1
                if track.missed > self.config.max_missed:
                    del self._tracks[region_id]

    def forget_descriptions(self) -> None:
        """The prompt changed: no earlier text may be reused (ids stay)."""
        for track in self._tracks.values():
            track.described, track.described_mask = None, None

    def _match(self, masks: list[np.ndarray], boxes: list[Box], classes: list[str]) -> list[int]:
        tracks = list(self._tracks.values())
        pairs = sorted(
            (
                (mask_iou(mask, track.mask, box, track.box), i, track.id)
                for i, (mask, box, label_class) in enumerate(zip(masks, boxes, classes, strict=True))
                for track in tracks
                if _compatible(track.label_class, label_class)
            ),
            reverse=True,
        )
        ids: dict[int, int] = {}
        taken: set[int] = set()
        for iou, i, track_id in pairs:
            if iou < self.config.match_iou:
                break
            if i not in ids and track_id not in taken:
                ids[i] = track_id
                taken.add(track_id)
        for i in range(len(masks)):
            if i not in ids:
                ids[i] = self._new_id(taken)
                taken.add(ids[i])
        return [ids[i] for i in range(len(masks))]

    def _new_id(self, taken: set[int]) -> int:
        while True:
            candidate = next(self._next_ids)
            if candidate not in self._tracks and candidate not in taken:
                return candidate


Box = tuple[int, int, int, int]  # x, y, width, height
Describe = Callable[[list[np.ndarray], list[int]], list[RegionResult]]  # masks, ids → results in that order


def mask_classes(classes: list[str], mask_count: int, kept: int) -> list[str] | None:
    """``RegionMasks.classes`` checked against its masks and cut as they were (``max_regions``); None if empty."""
    if not classes:
        return None
    if len(classes) != mask_count:
        raise ValueError(f"{len(classes)} classes for {mask_count} masks")
    return [str(c) for c in classes[:kept]]


def _compatible(a: str, b: str) -> bool:
    """Classes agree, or one side has none."""
    return not a or not b or a == b


def describe_tracked(
    tracker: RegionTracker,
    describe: Describe,
    masks: list[np.ndarray],
    image_hw: tuple[int, int],
    given_ids: list[int] | None = None,
    classes: list[str] | None = None,
) -> list[RegionResult]:
    """One frame: stable ids for ``masks``; only new or changed regions go to ``describe`` (one batch), the
    rest keep their text. Every mask is checked against the image first (size, binary, not empty): a
    reused region never reaches the model, whose own check would have caught it."""
    masks = [check_region_mask(index, mask, image_hw) for index, mask in enumerate(masks)]
    if not masks:
        return []
    assignments = tracker.assign(masks, given_ids, classes)
    todo = [i for i, a in enumerate(assignments) if a.reused is None]
    fresh = describe([masks[i] for i in todo], [assignments[i].id for i in todo]) if todo else []
    described = dict(zip(todo, fresh, strict=True))
    regions = [a.reused if a.reused is not None else described[i] for i, a in enumerate(assignments)]
    tracker.update(masks, regions, [a.reused is not None for a in assignments], classes)
    return regions


def mask_iou(a: np.ndarray, b: np.ndarray, box_a: Box | None = None, box_b: Box | None = None) -> float:
    """With boxes given, disjoint regions cost nothing and overlapping ones only their boxes' union
    (measured on the 2-core CPU: 16 regions of a 1280x720 frame against 16 tracks in 0.9 ms, against 38 ms
    for whole-frame IoUs)."""
    if a.shape != b.shape:
        return 0.0  # another camera resolution: not the same region
    if box_a is not None and box_b is not None:
        (ax, ay, aw, ah), (bx, by, bw, bh) = box_a, box_b
        if ax >= bx + bw or bx >= ax + aw or ay >= by + bh or by >= ay + ah:
            return 0.0
        x0, y0, x1, y1 = min(ax, bx), min(ay, by), max(ax + aw, bx + bw), max(ay + ah, by + bh)
        a, b = a[y0:y1, x0:x1], b[y0:y1, x0:x1]
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0
