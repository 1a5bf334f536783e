"""Osprey's open-vocabulary answer metrics (the reference's definitions).

- Semantic Similarity (SS): cosine of the all-MiniLM-L6-v2 embeddings of answer and label.
- Semantic IoU (S-IoU): Jaccard index of the two word sets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .data.robustness import EmbedFn, minilm_embedder

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def semantic_iou(answer: str, label: str) -> float:
    a, b = words(answer), words(label)
    return len(a & b) / len(a | b) if a | b else 1.0


def semantic_similarity(answers: Sequence[str], labels: Sequence[str], embed: EmbedFn | None = None) -> np.ndarray:
    """Per-pair cosine similarity, in [-1, 1]."""
    embed = embed or minilm_embedder()
    a, b = embed(list(answers)), embed(list(labels))
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
