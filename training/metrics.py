"""Osprey's open-vocabulary answer metrics (the reference's definitions).

- Semantic Similarity (SS): cosine of the all-MiniLM-L6-v2 embeddings of answer and label.
- Semantic IoU (S-IoU): Jaccard index of the two word sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .data.robustness import EmbedFn, minilm_embedder

_PUNCTUATION = str.maketrans({".": " ", ":": " ", ",": " "})


def words(text: str) -> set[str]:
    """The released S-IoU's words: lower-cased, split on whitespace once ".", ":" and "," are spaces
    ("bow (weapon)" → {"bow", "(weapon)"}, "t-shirt" stays one word)."""
    return set(text.lower().translate(_PUNCTUATION).split())


def semantic_iou(answer: str, label: str) -> float:
    a, b = words(answer), words(label)
    return len(a & b) / len(a | b) if a | b else 1.0


def semantic_similarity(answers: Sequence[str], labels: Sequence[str], embed: EmbedFn | None = None) -> np.ndarray:
    """Per-pair cosine similarity, in [-1, 1]."""
    embed = embed or minilm_embedder()
    a, b = embed(list(answers)), embed(list(labels))
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
