"""The shapes world written in each evaluation's own data format, so every protocol runs end to end on the
shipped tiny model without downloads: the loaders read these files exactly as they read the real ones.

Under ``out``:
- ``ade20k/`` and ``cityscapes/``: COCO-panoptic ground truth in each dataset's layout; things are the six
  shapes (their names carry synonyms, as ADE20K's do), the background is one stuff class;
- ``lvis/shapes_lvis_val_category.json`` (names "star") and ``paco/shapes_paco_val_category.json``
  (PACO's "object:part" form, here "star:red"), with their images;
- ``refcocog/finetune_refcocog_val_with_mask.json``: one referring expression per region;
- ``pope/coco_pope_{random,popular,adversarial}.json``: three objects present and three absent per image
  ("red star" is an object), negatives drawn at random, from the most frequent objects, and from those
  that co-occur most with the present ones;
- ``ferret_bench/box_refer_{caption,reason}.json`` (regions as box polygons) and ``references.jsonl``,
  reference answers written from the ground truth.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

from osprey_model.shapes import CATEGORIES, COLOURS

from ..data.records import encode_rle
from ..shapes_world import describe, occluders, scene
from .panoptic_data import id_to_rgb

SYNONYMS = {
    "circle": "circle, disc, round shape",
    "square": "square, quadrilateral",
    "triangle": "triangle, trigon",
    "star": "star, five-pointed star",
    "hexagon": "hexagon, six-sided polygon",
    "diamond": "diamond, rhombus, lozenge",
}
BACKGROUND = "wall, background"
CITY = "shapesville"


def _scenes(count: int, seed: int, overlap: float):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        image, visible, full, shapes = scene(rng, overlap)
        yield rng, image, visible, full, shapes


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def write_panoptic(out: Path, count: int, seed: int, layout: str) -> Path:
    categories = [
        {"id": k + 1, "name": SYNONYMS[c], "isthing": 1, "supercategory": "shape"} for k, c in enumerate(CATEGORIES)
    ]
    categories.append({"id": len(CATEGORIES) + 1, "name": BACKGROUND, "isthing": 0, "supercategory": "stuff"})
    if layout == "cityscapes":
        json_path = out / "gtFine" / "cityscapes_panoptic_val.json"
        image_dir = out / "leftImg8bit" / "val" / CITY
    else:
        json_path = out / "ade20k_panoptic_val.json"
        image_dir = out / "images" / "validation"
    png_dir = json_path.with_suffix("")
    png_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for number, (_, image, visible, _, shapes) in enumerate(_scenes(count, seed, overlap=0.5), 1):
        if layout == "cityscapes":
            stem = f"{CITY}_000000_{number:06d}"
            image_name, png_name = f"{stem}_leftImg8bit.png", f"{stem}_gtFine_panoptic.png"
            listed_name = f"{stem}_gtFine_leftImg8bit.png"  # what cityscapesScripts writes into the JSON
        else:
            stem = f"ADE_val_{number:08d}"
            image_name, png_name = f"{stem}.jpg", f"{stem}.png"
            listed_name = image_name
        Image.fromarray(image).save(image_dir / image_name, quality=95)
        ids = np.zeros(image.shape[:2], np.int64)
        segments = []
        regions = [(m, CATEGORIES.index(s.category) + 1) for m, s in zip(visible, shapes, strict=True)]
        background = ~np.any(visible, axis=0)
        background[:2, :2] = False  # a few void pixels, as real ground truth has
        regions.append((background, len(CATEGORIES) + 1))
        for k, (mask, category) in enumerate(regions):
            segment_id = (k + 1) * 0x010101  # an id in all three channels, as large ids are
            ids[mask] = segment_id
            segments.append({"id": segment_id, "category_id": category, "iscrowd": 0, "area": int(mask.sum()),
                             "bbox": _bbox(mask)})  # fmt: skip
        Image.fromarray(id_to_rgb(ids)).save(png_dir / png_name)
        height, width = image.shape[:2]
        images.append({"id": stem, "file_name": listed_name, "height": height, "width": width})
        annotations.append({"image_id": stem, "file_name": png_name, "segments_info": segments})
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return json_path


def write_classification(out: Path, count: int, seed: int, paco: bool) -> Path:
    (out / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for number, (_, image, visible, _, shapes) in enumerate(_scenes(count, seed, overlap=0.5), 1):
        file_name = f"{number:012d}.png"
        Image.fromarray(image).save(out / "images" / file_name)
        height, width = image.shape[:2]
        entries.append({
            "file_name": file_name, "height": height, "width": width,
            "categories": [f"{s.category}:{s.colour}" if paco else s.category for s in shapes],
            "annotations": [{"segmentation": encode_rle(m), "bbox": _bbox(m)} for m in visible],
        })  # fmt: skip
    path = out / f"shapes_{'paco' if paco else 'lvis'}_val_category.json"
    path.write_text(json.dumps(entries))
    return path


def write_refcocog(out: Path, count: int, seed: int) -> Path:
    """One image entry per referring expression, as ``finetune_refcocog_val_with_mask.json`` has them."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    images: list[dict] = []
    annotations: list[dict] = []
    for number, (_, image, visible, full, shapes) in enumerate(_scenes(count, seed, overlap=0.5), 1):
        file_name = f"{number:012d}.png"
        Image.fromarray(image).save(out / "images" / file_name)
        height, width = image.shape[:2]
        for k, (mask, shape) in enumerate(zip(visible, shapes, strict=True)):
            info = describe(shape, mask, occluders(k, shapes, full))
            caption = f"the {info['short']} in the {info['where']}"
            entry_id = len(images) + 1
            images.append({"id": entry_id, "file_name": f"COCO_train2014_{file_name}", "height": height,
                           "width": width, "caption": caption})  # fmt: skip
            annotations.append({"id": entry_id, "image_id": entry_id, "segmentation": encode_rle(mask),
                                "bbox": _bbox(mask), "area": int(mask.sum()), "iscrowd": 0,
                                "category_id": 1})  # fmt: skip
    path = out / "finetune_refcocog_val_with_mask.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "shape"}]})
    )
    return path


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def write_pope(out: Path, count: int, seed: int, per_image: int = 3) -> dict[str, Path]:
    (out / "images").mkdir(parents=True, exist_ok=True)
    objects = [f"{colour} {category}" for category in CATEGORIES for colour in COLOURS]
    present: list[list[str]] = []
    for number, (_, image, _, _, shapes) in enumerate(_scenes(count, seed, overlap=0.3), 1):
        Image.fromarray(image).save(out / "images" / f"COCO_val2014_{number:012d}.png")
        present.append([f"{s.colour} {s.category}" for s in shapes])
    frequency = Counter(o for names in present for o in names)
    together = Counter(pair for names in present for pair in combinations(sorted(names), 2))
    rng = np.random.default_rng(seed + 1)
    paths = {}
    for split in ("random", "popular", "adversarial"):
        lines: list[dict] = []
        for number, names in enumerate(present, 1):
            absent = [o for o in objects if o not in names]
            if split == "random":
                negatives = list(rng.choice(absent, per_image, replace=False))
            elif split == "popular":
                negatives = sorted(absent, key=lambda o: (-frequency[o], o))[:per_image]
            else:
                score = {o: sum(together[_pair(o, p)] for p in names) for o in absent}
                negatives = sorted(absent, key=lambda o: (-score[o], o))[:per_image]
            positives = list(rng.choice(names, min(per_image, len(names)), replace=False))
            for name, label in [(p, "yes") for p in positives] + [(n, "no") for n in negatives]:
                lines.append({"question_id": len(lines) + 1, "image": f"COCO_val2014_{number:012d}.png",
                              "text": f"Is there a {name} in the image?", "label": label})  # fmt: skip
        paths[split] = out / f"coco_pope_{split}.json"
        paths[split].write_text("".join(json.dumps(line) + "\n" for line in lines))
    return paths


FERRET_QUESTIONS = {
    "refer_desc": "Please describe the object in <region> in detail.",
    "refer_reason": "Which shapes are covering part of the object in <region>, and what is that object?",
}


def write_ferret_bench(out: Path, count: int, seed: int) -> Path:
    (out / "images").mkdir(parents=True, exist_ok=True)
    questions: dict[str, list[dict]] = {"refer_desc": [], "refer_reason": []}
    references: list[dict] = []
    for number, (rng, image, visible, full, shapes) in enumerate(_scenes(count, seed, overlap=0.5), 1):
        file_name = f"{number:012d}.png"
        Image.fromarray(image).save(out / "images" / file_name)
        k = int(rng.integers(len(shapes)))
        covered_by = occluders(k, shapes, full)
        info = describe(shapes[k], visible[k], covered_by)
        x, y, w, h = _bbox(visible[k])
        polygon = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        category = "refer_desc" if number % 2 else "refer_reason"
        question_id = len(questions[category])  # each file numbers its questions from 0, as Ferret's do
        questions[category].append({
            "question_id": question_id, "image": file_name, "category": category,
            "text": FERRET_QUESTIONS[category], "annotation": {"bbox": [x, y, w, h], "segmentation": polygon},
        })  # fmt: skip
        if category == "refer_desc":
            reference = info["detail"]
        else:
            hidden = " and the ".join(f"{s.colour} {s.category}" for s in covered_by) or "no shape"
            reference = f"the object is a {info['short']}; it is covered in part by the {hidden}."
        references.append({"question_id": question_id, "category": category, "text": reference})
    for category, name in (("refer_desc", "box_refer_caption.json"), ("refer_reason", "box_refer_reason.json")):
        (out / name).write_text("".join(json.dumps(q) + "\n" for q in questions[category]))
    path = out / "references.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in references))
    return path


def write_all(out: Path, images: int, seed: int = 20_000) -> None:
    """Scenes of their own (seeds far from the training data's), ``images`` per dataset."""
    write_panoptic(out / "ade20k", images, seed, "ade20k")
    write_panoptic(out / "cityscapes", images, seed + 1, "cityscapes")
    write_classification(out / "lvis", images, seed + 2, paco=False)
    write_classification(out / "paco", images, seed + 3, paco=True)
    write_refcocog(out / "refcocog", images, seed + 4)
    write_pope(out / "pope", images, seed + 5)
    write_ferret_bench(out / "ferret_bench", images, seed + 6)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the shapes world in every evaluation's data format.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=30, help="images per dataset")
    parser.add_argument("--seed", type=int, default=20_000)
    args = parser.parse_args()
    write_all(args.out, args.images, args.seed)
    print(f"datasets in {args.out}")


if __name__ == "__main__":
    main()
