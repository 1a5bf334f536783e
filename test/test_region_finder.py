"""Ranking regions against a text query (real all-MiniLM-L6-v2 from its wheel), and the described-frame store."""

from __future__ import annotations

import numpy as np
import pytest
from std_msgs.msg import Header

from osprey_model.text_embedding import minilm_embedder
from osprey_ros.region_describer import RegionResult
from osprey_ros.region_finder import (
    DescribedFrame,
    DescribedFrames,
    rank_by_similarity,
    region_text,
    yes_probability,
)


def region(i: int, label: str, **attributes: str) -> RegionResult:
    return RegionResult(i, label, "", (0, 0, 1, 1), 1, attributes=attributes)


@pytest.fixture(scope="module")
def embed():
    return minilm_embedder()


REGIONS = [
    region(0, "blue square", category="square", colour="blue"),
    region(1, "red circle", category="circle", colour="red"),
    region(2, "a kitchen knife", category="knife", colour="silver"),
    region(3, "coffee mug", category="mug", colour="white"),
]


@pytest.mark.parametrize(
    ("query", "best"),
    [("the red circle", 1), ("something to cut with", 2), ("a cup for a hot drink", 3), ("a blue box", 0)],
)
def test_the_meant_region_ranks_first(embed, query: str, best: int) -> None:
    ranked = rank_by_similarity(query, REGIONS, embed)
    assert ranked[0][0] == best, ranked
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True) and sorted(i for i, _ in ranked) == [0, 1, 2, 3]


def test_region_text_joins_label_and_attributes_once() -> None:
    assert (
        region_text(region(0, "red circle", category="circle", colour="red", material="")) == "red circle; circle; red"
    )
    assert region_text(region(0, "circle", category="circle")) == "circle"
    assert rank_by_similarity("x", [], lambda texts: np.zeros((len(texts), 3))) == []


@pytest.mark.parametrize(
    ("answer", "confidence", "expected"),
    [("Yes", 0.9, 0.9), ("No", 0.9, 0.1), ("yes.", 0.6, 0.6), ("circle", 0.9, 0.5)],
)
def test_yes_probability(answer: str, confidence: float, expected: float) -> None:
    assert yes_probability(answer, confidence) == pytest.approx(expected)


def test_described_frames_find_the_newest_or_the_stamp_within_slop() -> None:
    frames = DescribedFrames(size=2)
    with pytest.raises(ValueError, match="no frame described yet"):
        frames.find(0, 10)
    for stamp in (100, 200, 300):
        frames.add(DescribedFrame(stamp, Header(), [], []))
    assert frames.find(0, 0).stamp == 300 and frames.find(205, 10).stamp == 200
    with pytest.raises(ValueError, match=r"kept: 0.000..0.000"):
        frames.find(100, 10)  # pushed out (size 2)
