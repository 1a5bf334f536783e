"""Reasoning-segmentation evaluation of any LISA checkpoint: gIoU and cIoU, as the released ``validate``.

    python -m training.evaluate_lisa --model DIR [--clip DIR] --data ReasonSeg/val --out DIR [--limit N]

ReasonSeg layout (``X.jpg`` + LabelMe ``X.json``), the first query of each image (the released validation
uses ``text[0]``). Each answer's ``[SEG]`` masks are compared with the targets in order; a target without a
predicted mask is compared with an empty one (an answer that forgets to segment scores 0 on it, not nothing).
Writes ``answers.jsonl`` (per item: query, answer, per-mask IoU) and ``results.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from osprey_model.lisa import LisaPredictor

from .lisa.data import load_reason_seg
from .lisa.metrics import IGNORE, SegmentationScores, intersection_union


@dataclass
class EvalItem:
    id: str
    image: np.ndarray
    query: str
    targets: list[np.ndarray]  # 0 / 1 / 255, in the order the answer should segment them
    kind: str = "reason_seg"
    expected_answer: str = ""  # when the data say what the answer should read (the shapes world does)


@dataclass
class ItemResult:
    id: str
    kind: str
    query: str
    answer: str
    ious: list[float] = field(default_factory=list)
    intersections: list[int] = field(default_factory=list)
    unions: list[int] = field(default_factory=list)


def reason_seg_items(split_dir: str | Path, limit: int = 0) -> list[EvalItem]:
    records = load_reason_seg(split_dir)[: limit or None]
    items = []
    for record in records:
        with Image.open(record.image) as image:
            rgb = np.asarray(image.convert("RGB"))
        items.append(EvalItem(record.id, rgb, record.texts[0][0], record.masks))
    return items


def score_masks(id_: str, kind: str, query: str, answer: str, masks: np.ndarray, targets: list[np.ndarray]):
    """Per target: the IoU with the answer's mask of the same rank (an empty one when there is none)."""
    result = ItemResult(id_, kind, query, answer)
    for k, target in enumerate(targets):
        predicted = masks[k] if k < len(masks) else np.zeros(target.shape, bool)
        i, u = intersection_union(predicted, target)
        result.ious.append(1.0 if u == 0 else i / (u + 1e-5))
        result.intersections.append(i)
        result.unions.append(u)
    return result


def evaluate(predictor: LisaPredictor, items: Iterable[EvalItem], max_new_tokens: int = 32) -> list[ItemResult]:
    results = []
    for item in tqdm(list(items), desc="evaluating", unit="query"):
        out = predictor.segment(item.image, item.query, max_new_tokens=max_new_tokens)
        results.append(score_masks(item.id, item.kind, item.query, out.answer, out.masks, item.targets))
    return results


def summarise(results: list[ItemResult]) -> SegmentationScores:
    """gIoU over every target mask, cIoU over their summed intersections and unions."""
    ious = [iou for r in results for iou in r.ious]
    intersection = sum(i for r in results for i in r.intersections)
    union = sum(u for r in results for u in r.unions)
    return SegmentationScores(
        giou=float(np.mean(ious)) if ious else 0.0, ciou=intersection / union if union else 1.0, masks=len(ious)
    )


def write_results(results: list[ItemResult], out_dir: Path, title: str) -> SegmentationScores:
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "answers.jsonl").open("w", encoding="utf-8") as f:
        for result in results:
            f.write(json.dumps(asdict(result)) + "\n")
    scores = summarise(results)
    lines = [f"# {title}", "", "| items | masks | gIoU | cIoU |", "|---|---|---|---|"]
    lines.append(f"| {len(results)} | {scores.masks} | {scores.giou:.3f} | {scores.ciou:.3f} |")
    (out_dir / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="LISA checkpoint folder (released layout)")
    parser.add_argument("--clip", default=None, help="CLIP tower folder (default: config's mm_vision_tower)")
    parser.add_argument("--data", required=True, help="a ReasonSeg split folder (X.jpg + X.json)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    predictor = LisaPredictor.from_pretrained(args.model, args.clip, device=args.device)
    items = reason_seg_items(args.data, args.limit)
    if not items:
        raise SystemExit(f"no readable ReasonSeg items in {args.data}")
    results = evaluate(predictor, items, args.max_new_tokens)
    scores = write_results(results, args.out, f"ReasonSeg {Path(args.data).name}: {args.model}")
    print(f"{len(results)} queries, {scores.masks} masks: gIoU {scores.giou:.3f}, cIoU {scores.ciou:.3f}")


if __name__ == "__main__":
    main()

__all__ = ["IGNORE", "EvalItem", "ItemResult", "evaluate", "reason_seg_items", "score_masks", "summarise"]
