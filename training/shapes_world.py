"""The shapes world as training data: images, masks and Osprey-format annotations, deterministic for a seed.

Writes, under one folder:
- ``images/*.png``
- ``osprey_shapes_conversation.json``, ``osprey_shapes_short_form.json``,
  ``osprey_shapes_detail_description.json``, ``osprey_shapes_positive_negative.json`` — Osprey-724K format
  (regions as COCO RLE) for stage 3;
- ``shapes_instances.json`` — COCO instances (category per region) for stage 2;
- ``shapes_captions.json`` — LLaVA-style captions for stage 1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from osprey_model.conversation import SHORT_ANSWER_SUFFIX
from osprey_model.shapes import CATEGORIES, Shape, position_words, random_shapes, render

from .data.records import encode_rle
from .data.robustness import NegativeMiner, minilm_embedder, yes_no_turns

WIDTH, HEIGHT = 320, 240


Scene = tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[Shape]]


def scene(rng: np.random.Generator, overlap: float, min_visible: float = 0.3) -> Scene:
    """3–5 shapes, each at least ``min_visible`` of it in view; returns image, visible and full masks, shapes."""
    while True:
        shapes = random_shapes(rng, WIDTH, HEIGHT, int(rng.integers(3, 6)), overlap=overlap)
        image, visible = render(shapes, WIDTH, HEIGHT, rng)
        full = [render([shape], WIDTH, HEIGHT)[1][0] for shape in shapes]
        if all(v.sum() >= max(min_visible * f.sum(), 80) for v, f in zip(visible, full, strict=True)):
            return image, visible, full, shapes


def occluders(index: int, shapes: list[Shape], masks_full: list[np.ndarray]) -> list[Shape]:
    return [shapes[j] for j in range(index + 1, len(shapes)) if (masks_full[index] & masks_full[j]).any()]


def describe(shape: Shape, mask: np.ndarray, covered_by: list[Shape]) -> dict[str, str]:
    name = f"{shape.colour} {shape.category}"
    where = position_words(mask)
    detail = f"a {name} in the {where} of the picture."
    if covered_by:
        detail += (
            " it is partly hidden by the " + " and the ".join(f"{s.colour} {s.category}" for s in covered_by) + "."
        )
    return {"category": shape.category, "colour": shape.colour, "short": name, "detail": detail, "where": where}


def _osprey_record(image_id: int, file_name: str, masks: list[np.ndarray], shapes: list[Shape], conversations) -> dict:
    return {
        "id": f"shapes-{image_id}",
        "file_name": file_name,
        "height": HEIGHT,
        "width": WIDTH,
        "annotation": [
            {"segmentation": encode_rle(m), "bbox": _bbox(m), "category": s.category, "colour": s.colour}
            for m, s in zip(masks, shapes, strict=True)
        ],
        "conversations": conversations,
    }


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _turns(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    out = []
    for question, answer in pairs:
        out += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return out


def generate(
    out_dir: Path, count: int, seed: int, overlap: float = 0.5, miner: NegativeMiner | None = None
) -> dict[str, Path]:
    """Write ``count`` scenes and their annotation files; returns the files by kind.

    With a ``miner``, also the positive / negative yes-no questions (robustness data).
    """
    rng = np.random.default_rng(seed)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[dict]] = {
        name: [] for name in ("conversation", "short_form", "detail_description", "positive_negative")
    }
    instances: dict[str, list] = {"images": [], "annotations": [], "categories": []}
    instances["categories"] = [{"id": i + 1, "name": name} for i, name in enumerate(CATEGORIES)]
    captions = []
    for image_id in range(count):
        image, masks, full, shapes = scene(rng, overlap)
        info = [describe(s, m, occluders(i, shapes, full)) for i, (s, m) in enumerate(zip(shapes, masks, strict=True))]
        file_name = f"{image_id:06d}.png"
        Image.fromarray(image).save(images_dir / file_name)
        n = len(shapes)
        order = rng.permutation(n)
        # Multi-region conversation: colour, shape and relations, regions named <regionN>.
        conv = []
        for k in order[: min(3, n)]:
            r = k + 1
            conv.append((f"What is the colour of <region{r}>?" + SHORT_ANSWER_SUFFIX, info[k]["colour"]))
            conv.append((f"What shape is <region{r}>?" + SHORT_ANSWER_SUFFIX, info[k]["category"]))
        files["conversation"].append(_osprey_record(image_id, file_name, masks, shapes, _turns(conv)))
        # Short form: every region in turn, inline (<region> is the next region), as the node asks them.
        short = []
        for k in range(n):
            if rng.random() < 0.6:
                short.append(
                    ("Please give me a short description of <region>. Using a short phrase.", info[k]["short"])
                )
            else:
                short.append(("What is the category of <region>? Using only one word or phrase.", info[k]["category"]))
        files["short_form"].append(_osprey_record(image_id, file_name, masks, shapes, _turns(short)))
        # Detailed description of one region (<region> form).
        k = int(rng.integers(n))
        detail_q = "Can you give me a detailed description of <region>?"
        files["detail_description"].append(
            _osprey_record(image_id, file_name, [masks[k]], [shapes[k]], _turns([(detail_q, info[k]["detail"])]))
        )
        if miner is not None:
            yes_no = yes_no_turns([s.category for s in shapes], masks, miner, rng, per_region=1)
            files["positive_negative"].append(_osprey_record(image_id, file_name, masks, shapes, _turns(yes_no)))
        instances["images"].append({"id": image_id, "file_name": file_name, "height": HEIGHT, "width": WIDTH})
        for m, s in zip(masks, shapes, strict=True):
            instances["annotations"].append(
                {"id": len(instances["annotations"]), "image_id": image_id,
                 "category_id": CATEGORIES.index(s.category) + 1,
                 "segmentation": encode_rle(m), "bbox": _bbox(m), "area": int(m.sum()), "iscrowd": 0}
            )  # fmt: skip
        names = [f"a {i['short']}" for i in info]
        caption = "a picture of " + (", ".join(names[:-1]) + " and " + names[-1] if n > 1 else names[0]) + "."
        captions.append(
            {
                "id": f"shapes-{image_id}",
                "image": file_name,
                "conversations": _turns([("<image>\nDescribe the picture briefly.", caption)]),
            }
        )
    paths = {}
    for name, records in files.items():
        if not records:
            continue
        paths[name] = out_dir / f"osprey_shapes_{name}.json"
        paths[name].write_text(json.dumps(records))
    paths["instances"] = out_dir / "shapes_instances.json"
    paths["instances"].write_text(json.dumps(instances))
    paths["captions"] = out_dir / "shapes_captions.json"
    paths["captions"].write_text(json.dumps(captions))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate the shapes world in Osprey's data formats.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overlap", type=float, default=0.5, help="0 = scattered, 1 = piled up")
    parser.add_argument("--no-negatives", action="store_true", help="skip the MiniLM yes/no questions")
    args = parser.parse_args()
    miner = None if args.no_negatives else NegativeMiner(CATEGORIES, minilm_embedder())
    for kind, path in generate(args.out, args.count, args.seed, args.overlap, miner).items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
