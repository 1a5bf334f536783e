"""Records of the three data kinds, read from their files, with bad records reported and skipped.

- Osprey-724K (``.json`` array or ``.jsonl``): ``file_name``, ``height``, ``width``, ``annotation``
  (regions with COCO ``segmentation`` polygon or RLE, ``bbox``, ``category``), ``conversations``
  (alternating human / gpt turns that name regions as ``<region>`` or ``<regionN>``).
- Stage-2 region texts: a COCO instances file (``images``, ``annotations``, ``categories``); each region's
  text is its category name, or its referring expression (``caption`` / ``sentence``) for RefCOCO-style data.
- Stage-1 captions, LLaVA-style: ``image`` and ``conversations`` with ``<image>`` in the first human turn.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from osprey_model.conversation import SHORT_ANSWER_SUFFIX

logger = logging.getLogger(__name__)

REGION_TEXT_QUESTIONS = (
    "What is the category of <region>? Using only one word or phrase.",
    "Please give me a short description of <region>. Using a short phrase.",
    "What is <region>?" + SHORT_ANSWER_SUFFIX,
)
MAX_REGIONS_PER_IMAGE = 20  # as the released stage-2 data


@dataclass
class Record:
    id: str
    image: Path
    height: int
    width: int
    turns: list[tuple[str, str]]
    segmentations: list[Any] = field(default_factory=list)  # COCO polygon list or RLE dict, per region
    categories: list[str] = field(default_factory=list)
    bboxes: list[list[float]] = field(default_factory=list)


class RecordError(ValueError):
    pass


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO polygon list, uncompressed RLE or compressed RLE → bool (H, W). Empty → RecordError."""
    if not segmentation:
        raise RecordError("empty segmentation")
    if isinstance(segmentation, list):
        if not all(isinstance(poly, list) and len(poly) >= 6 for poly in segmentation):
            raise RecordError("a polygon needs at least 3 points")
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        rle = segmentation
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, height, width)
        elif isinstance(rle["counts"], str):
            rle = {**rle, "counts": rle["counts"].encode()}
    else:
        raise RecordError(f"unknown segmentation format {type(segmentation).__name__}")
    mask = mask_utils.decode(rle).astype(bool)
    if mask.shape != (height, width):
        raise RecordError(f"segmentation is {mask.shape}, the record says {(height, width)}")
    if not mask.any():
        raise RecordError("empty segmentation")
    return mask


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def read_json_records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) pairs from a JSON array or a JSON-lines file; malformed lines are reported and skipped."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        out = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append((f"{path.name}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                logger.warning("skipping %s line %d: malformed JSON (%s)", path.name, number, exc.msg)
        return out
    data = json.loads(text)
    if not isinstance(data, list):
        raise RecordError(f"{path} must hold a JSON array of records")
    return [(f"{path.name}[{i}]", item) for i, item in enumerate(data)]


def _turns(conversations: list[dict]) -> list[tuple[str, str]]:
    if len(conversations) < 2 or len(conversations) % 2:
        raise RecordError("conversations must alternate human and gpt turns")
    turns = []
    for human, gpt in zip(conversations[::2], conversations[1::2], strict=True):
        if human.get("from") != "human" or gpt.get("from") != "gpt":
            raise RecordError("conversations must alternate human and gpt turns")
        turns.append((human["value"].replace("<image>\n", "").replace("<image>", "").strip(), gpt["value"].strip()))
    return turns


def _checked(record: Record) -> Record:
    if not record.image.is_file():
        raise RecordError(f"missing image {record.image}")
    for i, segmentation in enumerate(record.segmentations):
        if not segmentation:
            raise RecordError(f"region {i + 1} has an empty segmentation")
    return record


def _load_each(path: Path, build: Callable[[dict, str], Record]) -> list[Record]:
    """Build a record from each JSON item; a bad one is logged with its id and skipped."""
    records = []
    for where, item in read_json_records(path):
        record_id = str(item.get("id", where)) if isinstance(item, dict) else where
        try:
            records.append(_checked(build(item, record_id)))
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("skipping record %s: %s", record_id, exc if not isinstance(exc, KeyError) else f"no {exc}")
    return records


def load_osprey_records(path: Path, image_root: Path) -> list[Record]:
    def build(item: dict, record_id: str) -> Record:
        annotation = item["annotation"]
        return Record(
            id=record_id,
            image=image_root / item["file_name"],
            height=int(item["height"]),
            width=int(item["width"]),
            turns=_turns(item["conversations"]),
            segmentations=[region.get("segmentation") for region in annotation],
            categories=[str(region.get("category", "")) for region in annotation],
            bboxes=[region.get("bbox", []) for region in annotation],
        )

    return _load_each(path, build)


def load_region_text_records(path: Path, image_root: Path, seed: int = 0) -> list[Record]:
    """COCO instances (or RefCOCO-style with a sentence per region): one record per image, ≤ 20 regions."""
    coco = json.loads(path.read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in coco.get("categories", [])}
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    rng = np.random.default_rng(seed)
    records = []
    for image in coco["images"]:
        anns = [a for a in by_image.get(image["id"], []) if a.get("segmentation")][:MAX_REGIONS_PER_IMAGE]
        if not anns:
            continue
        texts = [a.get("caption") or a.get("sentence") or names.get(a.get("category_id"), "") for a in anns]
        turns = [(REGION_TEXT_QUESTIONS[int(rng.integers(len(REGION_TEXT_QUESTIONS)))], t) for t in texts]
        record = Record(
            id=f"{path.name}:{image['id']}",
            image=image_root / image["file_name"],
            height=image["height"],
            width=image["width"],
            turns=turns,
            segmentations=[a["segmentation"] for a in anns],
            categories=[names.get(a.get("category_id"), "") for a in anns],
            bboxes=[a.get("bbox", []) for a in anns],
        )
        try:
            records.append(_checked(record))
        except RecordError as exc:
            logger.warning("skipping record %s: %s", record.id, exc)
    return records


def load_caption_records(path: Path, image_root: Path) -> list[Record]:
    def build(item: dict, record_id: str) -> Record:
        return Record(
            id=record_id, image=image_root / item["image"], height=0, width=0, turns=_turns(item["conversations"])
        )

    return _load_each(path, build)
