"""Stable ids across frames and description reuse, on the synthetic camera's moving shapes."""

from __future__ import annotations

import numpy as np
import pytest

from osprey_ros.region_describer import RegionResult, mask_box
from osprey_ros.region_tracker import RegionTracker, TrackerConfig, describe_tracked, mask_classes, mask_iou
from osprey_ros.synthetic_camera import ShapesScene

HW = (100, 160)  # the test frames' size


def square(x: int, y: int, size: int = 20, shape: tuple[int, int] = (100, 160)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y : y + size, x : x + size] = True
    return mask


def run_frame(tracker: RegionTracker, masks: list[np.ndarray], given: list[int] | None = None) -> list[RegionResult]:
    """What the node does, with a describer whose label names the frame the text was made in."""
    run_frame.count = getattr(run_frame, "count", 0) + 1

    def describe(todo: list[np.ndarray], ids: list[int]) -> list[RegionResult]:
        return [
            RegionResult(i, f"text of frame {run_frame.count}", "", mask_box(m), int(m.sum()))
            for m, i in zip(todo, ids, strict=True)
        ]

    return describe_tracked(tracker, describe, masks, masks[0].shape, given)


def test_box_limited_iou_equals_the_full_one() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = square(*rng.integers(0, 120, 2) // [1, 2], size=int(rng.integers(5, 40)))
        b = square(*rng.integers(0, 120, 2) // [1, 2], size=int(rng.integers(5, 40)))
        assert mask_iou(a, b, mask_box(a), mask_box(b)) == mask_iou(a, b)
    assert mask_iou(square(0, 0), square(0, 0, shape=(50, 50))) == 0.0


def test_a_moving_region_keeps_its_id_and_new_ones_get_fresh_ids() -> None:
    tracker = RegionTracker()
    first = run_frame(tracker, [square(10, 10), square(100, 50)])
    moved = run_frame(tracker, [square(100, 52), square(13, 10), square(60, 70)])  # order changed, one new
    assert [r.id for r in moved[:2]] == [first[1].id, first[0].id]
    assert moved[2].id not in {first[0].id, first[1].id}


def test_ids_from_the_mask_source_win() -> None:
    tracker = RegionTracker()
    regions = run_frame(tracker, [square(10, 10), square(100, 50)], given=[41, 7])
    assert [r.id for r in regions] == [41, 7]
    again = run_frame(tracker, [square(10, 10)], given=[7])  # the source says this is 7 now
    assert again[0].id == 7 and not again[0].reused  # 7's mask was elsewhere: described anew


def test_reuse_rises_on_a_static_scene_until_the_age_limit_and_stops_when_masks_change() -> None:
    tracker = RegionTracker(TrackerConfig(reuse_iou=0.85, reuse_max_age=4))
    masks = [square(10, 10), square(100, 50)]
    labels = [[r.label for r in run_frame(tracker, masks)] for _ in range(6)]
    assert labels[1] == labels[0] and labels[3] == labels[0]  # frames 2-4 reuse frame 1's text
    assert labels[4] != labels[0]  # the 5th is described again (age limit), then reused
    assert tracker.stats.described == 4 and tracker.stats.reused == 8
    before = tracker.stats.reused
    run_frame(tracker, [square(25, 10), square(115, 50)])  # both moved by 15 px: IoU 0.14, same ids
    assert tracker.stats.reused == before


def test_reuse_max_age_zero_describes_every_region_every_frame() -> None:
    tracker = RegionTracker(TrackerConfig(reuse_max_age=0))
    for _ in range(3):
        run_frame(tracker, [square(10, 10)])
    assert tracker.stats.reused == 0 and tracker.stats.described == 3


def test_forgetting_descriptions_keeps_ids() -> None:
    tracker = RegionTracker()
    first = run_frame(tracker, [square(10, 10)])
    tracker.forget_descriptions()
    second = run_frame(tracker, [square(10, 10)])
    assert second[0].id == first[0].id and not second[0].reused


def test_synthetic_camera_shapes_keep_their_tracked_ids_over_many_frames() -> None:
    """Camera ids (stable by construction) against the tracker's own, on 60 frames of drifting shapes."""
    scene = ShapesScene(320, 240, 4, seed=3)
    tracker = RegionTracker(TrackerConfig(max_missed=100))
    mapping: dict[int, int] = {}
    for _ in range(60):
        _, masks, _, camera_ids = scene.step()
        regions = run_frame(tracker, masks)
        for camera_id, region in zip(camera_ids, regions, strict=True):
            assert mapping.setdefault(camera_id, region.id) == region.id  # never swapped, never renumbered
    assert tracker.stats.tracks_started == 4 and tracker.stats.reused > 0


def test_a_slow_scene_reuses_most_descriptions() -> None:
    scene = ShapesScene(320, 240, 4, seed=3, speed=0.1)
    tracker = RegionTracker()
    for _ in range(40):
        _, masks, _, _ = scene.step()
        run_frame(tracker, masks)
    assert tracker.stats.reused > 2 * tracker.stats.described


def test_a_region_unseen_too_long_is_forgotten() -> None:
    tracker = RegionTracker(TrackerConfig(max_missed=2))
    first = run_frame(tracker, [square(10, 10)])
    for _ in range(3):
        run_frame(tracker, [square(100, 60)])
    back = run_frame(tracker, [square(100, 60), square(10, 10)])
    assert back[1].id != first[0].id


def test_a_region_hidden_for_a_few_frames_comes_back_under_its_id() -> None:
    tracker = RegionTracker(TrackerConfig(max_missed=5))
    first = run_frame(tracker, [square(10, 10), square(100, 50)])
    for _ in range(3):  # the first one is hidden (occluded): only the other is seen
        run_frame(tracker, [square(100, 50)])
    back = run_frame(tracker, [square(100, 50), square(12, 11)])
    assert [r.id for r in back] == [first[1].id, first[0].id]


def test_classes_from_the_mask_source_keep_ids_apart() -> None:
    tracker = RegionTracker()
    first = describe_tracked(tracker, run_frame_describe, [square(10, 10)], HW, classes=["cup"])
    same = describe_tracked(tracker, run_frame_describe, [square(11, 10)], HW, classes=["cup"])
    other = describe_tracked(tracker, run_frame_describe, [square(11, 10)], HW, classes=["bowl"])
    assert same[0].id == first[0].id and same[0].reused
    assert other[0].id != first[0].id and not other[0].reused  # same place, another class: another object
    unknown = describe_tracked(tracker, run_frame_describe, [square(11, 10)], HW)  # no classes: IoU alone
    assert unknown[0].id == other[0].id


def run_frame_describe(masks: list[np.ndarray], ids: list[int]) -> list[RegionResult]:
    return [RegionResult(i, "text", "", mask_box(m), int(m.sum())) for m, i in zip(masks, ids, strict=True)]


def test_mask_classes_are_checked_against_the_masks() -> None:
    assert mask_classes([], 3, 3) is None
    assert mask_classes(["a", "b", "c"], 3, 2) == ["a", "b"]  # cut with the masks (max_regions)
    with pytest.raises(ValueError, match="2 classes for 3 masks"):
        mask_classes(["a", "b"], 3, 3)


def test_a_scene_asked_for_more_shapes_than_colours_still_steps() -> None:
    scene = ShapesScene(320, 240, 9, seed=0)  # distinct colours: 6 shapes at most
    _, masks, shapes, ids = scene.step()
    assert len(scene.shapes) == 6 and len(masks) == len(shapes) == len(ids)
