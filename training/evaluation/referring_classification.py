"""Referring object classification (LVIS, PACO): Semantic Similarity and Semantic IoU.

The data are the released ``lvis_val_1k_category.json`` / ``paco_val_1k_category.json``: a list of images,
each with ``file_name``, ``height``, ``width``, ``categories`` (one name per object) and ``annotations``
(the objects' ``segmentation``, polygons or RLE). Every object is asked "What is the category of
<region>? Using only one word or phrase."; all objects of an image in one batched pass.

Cleaning as released: in labels ``_`` and ``:`` become spaces (PACO's "dog:leg" → "dog leg"); in answers
the text after a colon is kept, then ``.``, ``:`` and ``,`` become spaces. SS is the cosine of the MiniLM
embeddings of the two cleaned strings, S-IoU the Jaccard index of their lower-cased word sets; both are
averaged over all objects.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from osprey_model import OspreyPredictor
from osprey_model.text_embedding import EmbedFn

from ..data.records import RecordError, decode_segmentation
from ..metrics import semantic_iou, semantic_similarity
from .common import MAX_REGIONS_PER_IMAGE, Generation, ResultWriter, Table, after_colon, ask_regions

logger = logging.getLogger(__name__)

QUESTION = "What is the category of <region>? Using only one word or phrase."
PAPER = {"lvis": (65.24, 38.19), "paco": (73.06, 52.72)}  # Osprey-7B: SS, S-IoU


@dataclass
class ClassificationScores:
    images: int
    objects: int
    skipped: int
    semantic_similarity: float
    semantic_iou: float


def clean_label(label: str) -> str:
    return label.replace("_", " ").replace(":", " ")


def clean_answer(answer: str) -> str:
    return after_colon(answer).replace(".", " ").replace(":", " ").replace(",", " ")


def evaluate_referring_classification(
    predictor: OspreyPredictor,
    annotation_file: Path,
    image_root: Path,
    embed: EmbedFn,
    writer: ResultWriter,
    generation: Generation,
    limit: int = 0,
) -> ClassificationScores:
    images = json.loads(annotation_file.read_text())[: limit or None]
    answers, labels, skipped = [], [], 0
    for entry in tqdm(images, desc=f"classification {annotation_file.stem}", unit="image"):
        masks, names = [], []
        objects = entry.get("annotations", [])
        if len(objects) != len(entry.get("categories", [])):
            logger.warning("skipping %s: %d annotations but %d categories", entry.get("file_name"), len(objects),
                           len(entry.get("categories", [])))  # fmt: skip
            skipped += len(objects)
            continue
        for annotation, name in zip(objects, entry["categories"], strict=True):
            try:
                masks.append(decode_segmentation(annotation["segmentation"], entry["height"], entry["width"]))
                names.append(name)
            except (RecordError, KeyError) as exc:
                logger.warning("skipping an object of %s: %s", entry.get("file_name"), exc)
                skipped += 1
        try:
            with Image.open(image_root / entry["file_name"]) as image:
                frame = predictor.encode(np.asarray(image.convert("RGB")))
            if frame.image_hw != (entry["height"], entry["width"]):
                raise ValueError(f"the image is {frame.image_hw}, the record says {(entry['height'], entry['width'])}")
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("skipping %s: %s", entry.get("file_name"), exc)
            skipped += len(masks)
            continue
        for start in range(0, len(masks), MAX_REGIONS_PER_IMAGE):
            chunk = ask_regions(predictor, frame, masks[start : start + MAX_REGIONS_PER_IMAGE], QUESTION, generation)
            for answer, name in zip(chunk, names[start : start + MAX_REGIONS_PER_IMAGE], strict=True):
                answers.append(clean_answer(answer))
                labels.append(clean_label(name))
                writer.answer(
                    file_name=entry["file_name"], question=QUESTION, answer=answer, label=name,
                    semantic_iou=semantic_iou(answers[-1], labels[-1]),
                )  # fmt: skip
    similarity = semantic_similarity(answers, labels, embed) if answers else np.zeros(0)
    return ClassificationScores(
        images=len(images),
        objects=len(answers),
        skipped=skipped,
        semantic_similarity=float(np.mean(similarity)) if answers else float("nan"),
        semantic_iou=float(np.mean([semantic_iou(a, b) for a, b in zip(answers, labels, strict=True)]))
        if answers
        else float("nan"),
    )


def table(scores: ClassificationScores, dataset: str, model_name: str) -> str:
    out = Table(["model", "dataset", "objects", "SS", "S-IoU"])
    out.add(model_name, [dataset, scores.objects, scores.semantic_similarity, scores.semantic_iou])
    if dataset in PAPER:
        ss, siou = PAPER[dataset]
        out.add("Osprey-7B (paper)", [dataset, "", f"{ss:.2f}", f"{siou:.2f}"])
    return out.markdown()
