"""LISA's training stream: records of the four released kinds turned into questions and answers, drawn at the
released rates (semantic 9 : referring 3 : VQA 3 : ReasonSeg 1).

Each item is one question (the release packs up to three per image into one conversation; here each of an
image's targets is its own item, and the frozen encoders' outputs are cached per image, so the cost is the
same). Templates are the released ones: short questions for class names and referring expressions, long
ones for ReasonSeg sentences, a random answer with one ``[SEG]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..streams import SeededStream
from .data import (
    ANSWERS,
    IMAGE_PREFIX,
    LONG_QUESTIONS,
    SHORT_QUESTIONS,
    SegmentationRecord,
    SemanticDataset,
    SemanticRecord,
    VqaRecord,
    draw_source,
    semantic_targets,
)
from .trainer import LisaItem

logger = logging.getLogger(__name__)


@dataclass
class LisaSources:
    reason_seg: list[SegmentationRecord] = field(default_factory=list)
    refer_seg: list[SegmentationRecord] = field(default_factory=list)
    sem_seg: list[tuple[SemanticDataset, SemanticRecord]] = field(default_factory=list)
    vqa: list[VqaRecord] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        return {"reason_seg": len(self.reason_seg), "refer_seg": len(self.refer_seg), "sem_seg": len(self.sem_seg),
                "vqa": len(self.vqa)}  # fmt: skip


def _rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _segmentation_items(record: SegmentationRecord, rng: np.random.Generator, sentence: bool) -> list[LisaItem]:
    image = _rgb(record.image)
    items = []
    for mask, texts in zip(record.masks, record.texts, strict=True):
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
        text = _pick(rng, texts)
        if sentence:
            query = _pick(rng, LONG_QUESTIONS).format(sent=text)
        else:
            query = _pick(rng, SHORT_QUESTIONS).format(class_name=text.lower())
        items.append(LisaItem(image, query, _pick(rng, ANSWERS), [mask], image_id=f"{record.image}"))
    return items


def _draw(sources: LisaSources, kind: str, rng: np.random.Generator) -> list[LisaItem]:
    if kind == "reason_seg":
        record = _pick(rng, sources.reason_seg)
        return _segmentation_items(record, rng, sentence=record.is_sentence)
    if kind == "refer_seg":
        return _segmentation_items(_pick(rng, sources.refer_seg), rng, sentence=False)
    if kind == "sem_seg":
        source, semantic = _pick(rng, sources.sem_seg)
        masks, names = semantic_targets(source, semantic, rng)
        record = SegmentationRecord(semantic.id, semantic.image, masks, [[name] for name in names])
        return _segmentation_items(record, rng, sentence=False)
    vqa = _pick(rng, sources.vqa)
    question = vqa.conversations[0]["value"].replace(IMAGE_PREFIX, "").replace("<image>", "").strip()
    return [LisaItem(_rgb(vqa.image), question, vqa.conversations[1]["value"], [], image_id=str(vqa.image))]


def mixed_items(sources: LisaSources, seed: int = 0) -> SeededStream[LisaItem]:
    """Endless items at the released rates; a record that cannot be read is logged and skipped. A resumed run
    reads on from where its checkpoint was (``SeededStream``)."""
    sizes = sources.sizes()

    def draw(rng: np.random.Generator) -> list[LisaItem]:
        kind = draw_source(rng, sizes)
        try:
            return _draw(sources, kind, rng)
        except (OSError, ValueError) as exc:
            logger.warning("%s sample skipped: %s", kind, exc)
            return []

    return SeededStream(seed, draw)
