"""SS and S-IoU as the reference defines them, with the real MiniLM model from its wheel."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.robustness import NegativeMiner, minilm_embedder, nearest_region, yes_no_turns
from training.metrics import semantic_iou, semantic_similarity


@pytest.fixture(scope="module")
def embed():
    return minilm_embedder()


def test_semantic_iou() -> None:
    assert semantic_iou("a red circle", "red circle") == pytest.approx(2 / 3)
    assert semantic_iou("Red circle.", "red circle") == 1.0
    assert semantic_iou("blue square", "red circle") == 0.0


def test_semantic_similarity_ranks_meaning(embed) -> None:
    scores = semantic_similarity(["a red circle", "a blue square", "red circle"], ["red circle"] * 3, embed)
    assert scores[2] == pytest.approx(1.0, abs=1e-5)
    assert scores[0] > scores[1]


def test_negatives_are_similar_classes_and_the_nearest_object(embed) -> None:
    classes = ["dog", "puppy", "cat", "car", "truck", "bus", "banana", "apple", "orange", "chair", "table"]
    miner = NegativeMiner(classes, embed, top_k=3)
    negatives = miner.negatives("car", nearest_class="banana")
    assert negatives == ["truck", "bus", "dog", "banana"]  # 3 most similar by MiniLM, then the nearest object
    assert miner.negatives("dog", nearest_class=None) == ["puppy", "cat", "car"]

    masks = [np.zeros((20, 20), bool) for _ in range(3)]
    masks[0][0:5, 0:5] = masks[1][0:5, 6:10] = masks[2][15:20, 15:20] = True
    assert nearest_region(0, masks) == 1
    turns = yes_no_turns(["car", "banana", "chair"], masks, miner, np.random.default_rng(0), per_region=2)
    assert len(turns) == 9
    yes = [q for q, a in turns if a == "Yes"]
    assert sorted(yes) == sorted(
        f"Is <region{i}> a {c}? Answer the question using a single word or phrase."
        for i, c in ((1, "car"), (2, "banana"), (3, "chair"))
    )
