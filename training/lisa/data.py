"""LISA's training data in the released formats, each loader logging and skipping bad records.

- ReasonSeg: ``{split}/X.jpg`` + LabelMe-style ``X.json`` (``shapes``: ``label``, ``points``; ``text``: the
  queries; ``is_sentence``). Polygons are filled largest first; "flag" shapes are skipped and labels
  containing "ignore" become 255.
- Referring segmentation (refCOCO / + / g, refCLEF; the REFER layout): ``refs(unc).p`` (``refs(umd).p`` for
  refcocog), a pickle of plain lists and dicts read without executing code, and a COCO-style
  ``instances.json``; masks from pycocotools.
The question and answer templates are the released ones (``utils.py``).
"""

from __future__ import annotations

import io
import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..data.records import decode_segmentation
from .losses import IGNORE

logger = logging.getLogger(__name__)

SHORT_QUESTIONS = (
    "Can you segment the {class_name} in this image?",
    "Please segment the {class_name} in this image.",
    "What is {class_name} in this image? Please respond with segmentation mask.",
    "What is {class_name} in this image? Please output segmentation mask.",
)
LONG_QUESTIONS = ("{sent} Please respond with segmentation mask.", "{sent} Please output segmentation mask.")
EXPLANATORY_SUFFIXES = (
    "Please output segmentation mask and explain why.",
    "Please output segmentation mask and explain the reason.",
    "Please output segmentation mask and give some explanation.",
)
ANSWERS = ("It is [SEG].", "Sure, [SEG].", "Sure, it is [SEG].", "Sure, the segmentation result is [SEG].", "[SEG].")
IMAGE_PREFIX = "<image>\n"


@dataclass
class SegmentationRecord:
    """One image, its target mask(s) (0 / 1 / 255 per pixel) and the texts that name them."""

    id: str
    image: Path
    masks: list[np.ndarray]  # (H, W) uint8 each; one per text group
    texts: list[list[str]]  # per mask: the queries / expressions / class names that mean it
    is_sentence: bool = False


def labelme_mask(shapes: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """ReasonSeg's target: polygons filled largest first (smaller ones drawn over), "flag" skipped,
    labels containing "ignore" as 255, the rest as 1."""
    drawable = [s for s in shapes if s.get("label") != "flag" and len(s.get("points", [])) >= 3]

    def area(shape: dict[str, Any]) -> float:
        x, y = np.asarray(shape["points"], float).T
        return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for shape in sorted(drawable, key=area, reverse=True):
        value = IGNORE if "ignore" in str(shape.get("label", "")).lower() else 1
        draw.polygon([tuple(map(float, point)) for point in shape["points"]], fill=value)
    return np.asarray(canvas)


def load_reason_seg(split_dir: str | Path) -> list[SegmentationRecord]:
    """Every ``X.jpg`` with a readable ``X.json`` holding queries and at least one shape."""
    split_dir = Path(split_dir)
    records = []
    for json_path in sorted(split_dir.glob("*.json")):
        image = json_path.with_suffix(".jpg")
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
            texts = [t for t in data.get("text", []) if isinstance(t, str) and t.strip()]
            if not texts:
                raise ValueError("no query text")
            if not image.is_file():
                raise FileNotFoundError(f"no image {image.name}")
            with Image.open(image) as opened:
                width, height = opened.size
            mask = labelme_mask(data.get("shapes", []), height, width)
            if not (mask == 1).any():
                raise ValueError("no target region (only flags, ignores or degenerate polygons)")
        except (OSError, ValueError, TypeError, KeyError) as exc:
            logger.warning("ReasonSeg %s skipped: %s", json_path.name, exc)
            continue
        records.append(
            SegmentationRecord(json_path.stem, image, [mask], [texts], is_sentence=bool(data.get("is_sentence")))
        )
    return records


class _PlainDataUnpickler(pickle.Unpickler):
    """The REFER refs file is a pickle of lists, dicts, strings and numbers: nothing else may be built."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to build {module}.{name}: a refs file holds plain data only")


def load_refs(path: str | Path) -> list[dict[str, Any]]:
    try:
        refs = _PlainDataUnpickler(io.BytesIO(Path(path).read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a REFER refs file ({exc})") from exc
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    return refs


def load_refer(dataset_dir: str | Path, image_dir: str | Path, split: str = "train") -> list[SegmentationRecord]:
    """One record per image of ``split``: every referred object's mask with its sentences.

    ``dataset_dir``: e.g. ``refer_seg/refcoco`` (``refs(unc).p`` or ``refs(umd).p``, ``instances.json``).
    """
    dataset_dir = Path(dataset_dir)
    refs_file = next((dataset_dir / n for n in ("refs(unc).p", "refs(umd).p") if (dataset_dir / n).is_file()), None)
    if refs_file is None:
        raise FileNotFoundError(f"no refs(unc).p or refs(umd).p in {dataset_dir}")
    instances = json.loads((dataset_dir / "instances.json").read_text(encoding="utf-8"))
    images = {image["id"]: image for image in instances.get("images", [])}
    annotations = {ann["id"]: ann for ann in instances.get("annotations", [])}
    by_image: dict[int, SegmentationRecord] = {}
    for ref in load_refs(refs_file):
        try:
            if ref.get("split") != split:
                continue
            image = images[ref["image_id"]]
            annotation = annotations[ref["ann_id"]]
            sentences = [s["sent"] for s in ref.get("sentences", []) if str(s.get("sent", "")).strip()]
            if not sentences:
                raise ValueError("no sentence")
            mask = decode_segmentation(annotation["segmentation"], image["height"], image["width"])
        except (KeyError, ValueError, TypeError) as exc:
            logger.warning("REFER ref %s skipped: %s", ref.get("ref_id", "?") if isinstance(ref, dict) else "?", exc)
            continue
        record = by_image.setdefault(
            ref["image_id"], SegmentationRecord(str(ref["image_id"]), Path(image_dir) / image["file_name"], [], [])
        )
        record.masks.append(mask.astype(np.uint8))
        record.texts.append(sentences)
    return list(by_image.values())


@dataclass
class SemanticRecord:
    """An image and its per-pixel class map; which classes to ask about is drawn when the sample is made."""

    id: str
    image: Path
    labels: Path  # PNG of class indices (after the dataset's offset), 255 = unlabelled


@dataclass(frozen=True)
class SemanticDataset:
    """A semantic-segmentation source as LISA reads it: ADE20K (0 = unlabelled, the rest shifted down by
    one), COCO-Stuff (255 unlabelled; classes with '-' in their name are not asked about), ... ."""

    name: str
    images: Path
    labels: Path
    class_names: tuple[str, ...]
    label_offset: int = 0  # ADE20K: -1 (its 0 is "unlabelled")
    image_suffix: str = ".jpg"


def load_semantic(source: SemanticDataset) -> list[SemanticRecord]:
    records = []
    for image in sorted(source.images.glob(f"*{source.image_suffix}")):
        labels = source.labels / f"{image.stem}.png"
        if not labels.is_file():
            logger.warning("%s %s skipped: no label map %s", source.name, image.name, labels.name)
            continue
        records.append(SemanticRecord(image.stem, image, labels))
    return records


def semantic_targets(
    source: SemanticDataset, record: SemanticRecord, rng: np.random.Generator, max_classes: int = 3
) -> tuple[list[np.ndarray], list[str]]:
    """Up to ``max_classes`` classes present in the image (released: 3), each as a 0 / 1 mask and its name."""
    raw = np.asarray(Image.open(record.labels)).astype(np.int64)
    labels = np.where(raw == 255, 255, raw + source.label_offset)
    labels[(labels < 0) | (labels >= len(source.class_names))] = 255
    present = [int(c) for c in np.unique(labels) if c != 255 and "-" not in source.class_names[c]]
    chosen: list[int] = [int(c) for c in rng.permutation(present)[:max_classes]] if present else []
    masks = [(labels == c).astype(np.uint8) for c in chosen]
    return masks, [source.class_names[c].split(",")[0].strip() for c in chosen]


@dataclass
class VqaRecord:
    """llava_instruct_150k: an image and a conversation (human / gpt turns), no mask."""

    id: str
    image: Path
    conversations: list[dict[str, str]]


def load_vqa(path: str | Path, image_dir: str | Path) -> list[VqaRecord]:
    records = []
    for i, item in enumerate(json.loads(Path(path).read_text(encoding="utf-8"))):
        try:
            turns = item["conversations"]
            if not turns or len(turns) % 2 or any(t.get("from") not in ("human", "gpt") for t in turns):
                raise ValueError("conversations must alternate human / gpt turns")
            records.append(VqaRecord(str(item.get("id", i)), Path(image_dir) / item["image"], turns))
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("VQA record %s skipped: %s", item.get("id", i) if isinstance(item, dict) else i, exc)
    return records


# The released mix: semantic segmentation 9, referring 3, VQA 3, ReasonSeg 1, drawn per sample.
SAMPLE_RATES = {"sem_seg": 9, "refer_seg": 3, "vqa": 3, "reason_seg": 1}


def draw_source(rng: np.random.Generator, available: dict[str, int]) -> str:
    """Which data kind the next sample comes from, by the released rates among the kinds that have data."""
    kinds = [k for k in SAMPLE_RATES if available.get(k, 0) > 0]
    if not kinds:
        raise ValueError("no training data: give at least one of " + ", ".join(SAMPLE_RATES))
    weights = np.array([SAMPLE_RATES[k] for k in kinds], float)
    return kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
