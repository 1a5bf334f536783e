"""COCO-panoptic ground truth as Cityscapes and ADE20K ship it: a JSON of segments and one PNG per image
whose colour encodes the segment id (id = R + 256·G + 256²·B; 0 is void).

Layouts, found under ``--data``:
- Cityscapes: ``gtFine/cityscapes_panoptic_{split}.json``, ``gtFine/cityscapes_panoptic_{split}/``,
  images ``leftImg8bit/{split}/{city}/{image_id}_leftImg8bit.png`` (city = the id's first ``_`` field; the
  JSON's ``file_name`` reads ``{image_id}_gtFine_leftImg8bit.png``, a name no file has);
- ADE20K: ``ade20k_panoptic_{split}.json``, ``ade20k_panoptic_{split}/``, images
  ``images/{training|validation}/{name}.jpg``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .class_matching import ClassName, read_class_file, split_synonyms

logger = logging.getLogger(__name__)


def rgb_to_id(png: np.ndarray) -> np.ndarray:
    png = png.astype(np.int64)
    return png[..., 0] + 256 * png[..., 1] + 256 * 256 * png[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


@dataclass
class PanopticImage:
    image_id: int | str
    image_path: Path
    png_name: str
    segments: list[dict]  # segments_info: id, category_id, (iscrowd, area, bbox)
    ids: np.ndarray  # (H, W) segment id per pixel


@dataclass
class PanopticSet:
    json_path: Path
    png_dir: Path
    image_dir: Path
    layout: str  # cityscapes or ade20k
    classes: list[ClassName]

    def image_path(self, image: dict) -> Path:
        if self.layout == "cityscapes":  # file_name says "_gtFine_leftImg8bit"; the file is "<id>_leftImg8bit.png"
            image_id = str(image["id"])
            return self.image_dir / image_id.split("_")[0] / f"{image_id}_leftImg8bit.png"
        return self.image_dir / image["file_name"]

    def __iter__(self) -> Iterator[PanopticImage]:
        data = json.loads(self.json_path.read_text())
        images = {image["id"]: image for image in data["images"]}
        for annotation in data["annotations"]:
            image = images.get(annotation["image_id"])
            png = self.png_dir / annotation["file_name"]
            if image is None or not png.is_file():
                logger.warning("skipping %s: no image entry or no PNG", annotation.get("file_name"))
                continue
            with Image.open(png) as im:
                ids = rgb_to_id(np.asarray(im.convert("RGB")))
            yield PanopticImage(
                annotation["image_id"], self.image_path(image), png.name, annotation["segments_info"], ids
            )

    def __len__(self) -> int:
        return len(json.loads(self.json_path.read_text())["annotations"])


def find_panoptic_set(data: Path, split: str = "val", class_file: Path | None = None) -> PanopticSet:
    """The Cityscapes or ADE20K layout under ``data``; ``class_file`` (the released ``*_with_prompt_eng.txt``)
    replaces the JSON's names with the released synonym lists, class by class in id order."""
    cityscapes = data / "gtFine" / f"cityscapes_panoptic_{split}.json"
    ade = data / f"ade20k_panoptic_{split}.json"
    if cityscapes.is_file():
        json_path, png_dir, image_dir, layout = (
            cityscapes, cityscapes.with_suffix(""), data / "leftImg8bit" / split, "cityscapes",
        )  # fmt: skip
    elif ade.is_file():
        folder = {"val": "validation", "train": "training"}.get(split, split)
        json_path, png_dir, image_dir, layout = ade, ade.with_suffix(""), data / "images" / folder, "ade20k"
    else:
        raise FileNotFoundError(
            f"neither {cityscapes} nor {ade} exists: --data must hold a Cityscapes or ADE20K panoptic set"
        )
    categories = sorted(json.loads(json_path.read_text())["categories"], key=lambda c: c["id"])
    synonyms = [split_synonyms(c["name"]) for c in categories]
    if class_file is not None:
        synonyms = read_class_file(class_file)
        if len(synonyms) != len(categories):
            raise ValueError(f"{class_file} lists {len(synonyms)} classes, {json_path} has {len(categories)}")
    classes = [ClassName(c["id"], s, bool(c.get("isthing", 0))) for c, s in zip(categories, synonyms, strict=True)]
    return PanopticSet(json_path, png_dir, image_dir, layout, classes)
