"""Held-out evaluation of region answers: masks versus the same regions given as boxes.

The paper's central claim is that pixel-level masks beat boxes; on heavily overlapping shapes a box holds
pieces of its neighbours, so the answer has to guess. Reports category and colour accuracy (parsed from
the short description) and SS / S-IoU against the label "<colour> <category>".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from osprey_model import OspreyPredictor
from osprey_model.shapes import CATEGORIES, COLOURS

from ..data.dataset import box_of
from ..data.records import decode_segmentation, read_json_records
from ..data.robustness import EmbedFn
from ..metrics import semantic_iou, semantic_similarity


@dataclass
class RegionScores:
    regions: int
    category_accuracy: float
    colour_accuracy: float
    semantic_similarity: float
    semantic_iou: float


def first_word(answer: str, vocabulary) -> str | None:
    found = [w for w in answer.lower().replace(".", " ").split() if w in vocabulary]
    return found[0] if found else None


def evaluate(
    predictor: OspreyPredictor, annotation_file: Path, image_root: Path, embed: EmbedFn, limit: int = 0
) -> dict[str, RegionScores]:
    """Scores with mask prompts and with box prompts on the same regions."""
    records = [record for _, record in read_json_records(annotation_file)][: limit or None]
    answers: dict[str, list[str]] = {"mask": [], "box": []}
    labels, categories, colours = [], [], []
    for record in tqdm(records, desc="evaluating", unit="image"):
        with Image.open(image_root / record["file_name"]) as image:
            frame = predictor.encode(np.asarray(image.convert("RGB")))
        masks = [
            decode_segmentation(r["segmentation"], record["height"], record["width"]) for r in record["annotation"]
        ]
        answers["mask"] += predictor.describe(frame, masks, prompt="short", max_new_tokens=8)
        answers["box"] += predictor.describe(frame, [box_of(m) for m in masks], prompt="short", max_new_tokens=8)
        for region in record["annotation"]:
            categories.append(region["category"])
            colours.append(region["colour"])
            labels.append(f"{region['colour']} {region['category']}")
    scores = {}
    for kind, predicted in answers.items():
        similarity = semantic_similarity(predicted, labels, embed)
        scores[kind] = RegionScores(
            regions=len(labels),
            category_accuracy=float(
                np.mean([first_word(a, CATEGORIES) == c for a, c in zip(predicted, categories, strict=True)])
            ),
            colour_accuracy=float(
                np.mean([first_word(a, COLOURS) == c for a, c in zip(predicted, colours, strict=True)])
            ),
            semantic_similarity=float(np.mean(similarity)),
            semantic_iou=float(np.mean([semantic_iou(a, lab) for a, lab in zip(predicted, labels, strict=True)])),
        )
    return scores


def markdown_table(scores: dict[str, RegionScores]) -> str:
    rows = ["| prompt | regions | category acc. | colour acc. | SS | S-IoU |", "|---|---|---|---|---|---|"]
    for kind, s in scores.items():
        rows.append(
            f"| {kind} | {s.regions} | {s.category_accuracy:.3f} | {s.colour_accuracy:.3f} | "
            f"{s.semantic_similarity:.3f} | {s.semantic_iou:.3f} |"
        )
    return "\n".join(rows)
