"""Open-vocabulary answer → class, as the released open-vocabulary evaluation maps it.

Every synonym of every class becomes "There is a {synonym} in the scene."; the raw answer and those
sentences are embedded with all-MiniLM-L6-v2, and a class scores the best cosine over its synonyms. The
class probabilities are the softmax of those cosines (no temperature), as the released script feeds them
to the panoptic, instance and semantic evaluators.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from osprey_model.text_embedding import EmbedFn

TEMPLATE = "There is a {} in the scene."


@dataclass(frozen=True)
class ClassName:
    id: int  # the dataset's category id
    synonyms: tuple[str, ...]  # the first is the class's name
    isthing: bool

    @property
    def name(self) -> str:
        return self.synonyms[0]


def split_synonyms(text: str) -> tuple[str, ...]:
    """ "building, edifice" → ("building", "edifice"); ADE20K's category names carry their synonyms so."""
    return tuple(s.strip() for s in text.split(",") if s.strip())


def read_class_file(path: Path) -> list[tuple[str, ...]]:
    """The released ``*_with_prompt_eng.txt`` format: ``index:syn1,syn2`` per line, in contiguous order
    (ADE's line 0, ``invalid_class_id``, is skipped)."""
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        _, _, names = line.partition(":")
        if names.strip() == "invalid_class_id":
            continue
        out.append(split_synonyms(names))
    return out


class ClassMatcher:
    def __init__(self, classes: Sequence[ClassName], embed: EmbedFn) -> None:
        if not classes:
            raise ValueError("no classes to match answers against")
        self.classes = list(classes)
        self.embed = embed
        sentences = [TEMPLATE.format(s) for c in classes for s in c.synonyms]
        self._owner = np.array([i for i, c in enumerate(classes) for _ in c.synonyms])
        self._sentences = embed(sentences)

    def cosines(self, answers: Sequence[str]) -> np.ndarray:
        """(answers, classes): each class's best cosine over its synonyms."""
        if not answers:
            return np.zeros((0, len(self.classes)), np.float32)
        per_synonym = self.embed(list(answers)) @ self._sentences.T
        out = np.full((len(answers), len(self.classes)), -np.inf, np.float32)
        for k in range(len(self.classes)):
            out[:, k] = per_synonym[:, self._owner == k].max(axis=1)
        return out

    def probabilities(self, answers: Sequence[str]) -> np.ndarray:
        cos = self.cosines(answers)
        e = np.exp(cos - cos.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
