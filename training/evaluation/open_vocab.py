"""Open-vocabulary segmentation with ground-truth masks (Cityscapes, ADE20K-150): PQ, AP and mIoU.

As the released evaluation does it: every ground-truth panoptic segment of an image (at most 300) is a
region prompt, the model answers "What is in <region>? Using a short phrase.", the answer is mapped to
the dataset's classes by MiniLM similarity (``class_matching``), and the segments with their predicted
classes are scored as a panoptic prediction (PQ, by hotcoco's panopticapi-compatible ``pq_compute``), a
semantic one (mIoU as detectron2 computes it) and an instance one (mask AP of the thing classes among the
top 100 (segment, class) pairs by probability per image). The masks are perfect, so every point lost is a
wrong name.

Departures from the released run, which used detectron2: AP is COCO mask AP on the panoptic set's thing
segments for both datasets (the release scored Cityscapes with its own instance evaluator and ADE20K
against its instance annotations), and mIoU's ground truth is the panoptic PNG's classes (the release read
ADE20K's semantic PNGs). Expect AP and mIoU to differ a little from the paper's for the same answers.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from osprey_model import OspreyPredictor

from .class_matching import ClassMatcher
from .common import MAX_REGIONS_PER_IMAGE, Generation, ResultWriter, Table, ask_regions
from .panoptic_data import PanopticImage, PanopticSet, id_to_rgb

logger = logging.getLogger(__name__)

QUESTION = "What is in <region>? Using a short phrase."
REGIONS_PER_PASS = 64  # 300 float masks of a 2048 x 1024 frame would be 2.5 GB
DETECTIONS_PER_IMAGE = 100
PAPER = {"cityscapes": (50.64, 29.17, 49.78), "ade20k": (41.89, 41.24, 29.63)}  # Osprey-7B: PQ, AP, mIoU


@dataclass
class OpenVocabScores:
    images: int
    regions: int
    pq: float
    sq: float
    rq: float
    pq_things: float
    pq_stuff: float
    ap: float
    miou: float
    region_accuracy: float  # predicted class == ground truth, per region (not in the paper; explains the rest)
    skipped_images: int = 0


class _Accumulator:
    """Everything the three evaluators need, gathered image by image."""

    def __init__(self, dataset: PanopticSet, out_dir: Path) -> None:
        self.classes = dataset.classes
        self.index = {c.id: k for k, c in enumerate(self.classes)}
        self.confusion = np.zeros((len(self.classes), len(self.classes) + 1), np.int64)  # last column: unasked
        self.pred_dir = out_dir / "panoptic_pred"
        self.pred_dir.mkdir(parents=True, exist_ok=True)
        self.gt_images: list[dict] = []
        self.gt_annotations: list[dict] = []
        self.pred_annotations: list[dict] = []
        self.instances: list[dict] = []
        self.detections: list[dict] = []
        self.correct = self.regions = self.skipped = 0

    def add(self, item: PanopticImage, segments: list[dict], probabilities: np.ndarray) -> None:
        height, width = item.ids.shape
        number = len(self.gt_images) + 1  # COCO tools want integer image ids
        self.gt_images.append({"id": number, "file_name": item.png_name, "height": height, "width": width})
        self.gt_annotations.append({"image_id": number, "file_name": item.png_name, "segments_info": item.segments})
        predicted = probabilities.argmax(axis=1) if len(segments) else np.zeros(0, int)
        self._panoptic(item, number, segments, predicted)
        self._semantic(item, segments, predicted)
        self._instances(item, number, segments, probabilities)
        for segment, k in zip(segments, predicted, strict=True):
            self.correct += int(self.classes[k].id == segment["category_id"])
            self.regions += 1

    def _panoptic(self, item: PanopticImage, number: int, segments: list[dict], predicted: np.ndarray) -> None:
        """Each thing segment is its own prediction; stuff segments of one predicted class merge into one.
        Prediction ids are numbered afresh (1, 2, ...), so a merged segment cannot take a thing's id."""
        out = np.zeros_like(item.ids)
        info: dict[object, dict] = {}
        for segment, k in zip(segments, predicted, strict=True):
            cls = self.classes[k]
            key = ("thing", segment["id"]) if cls.isthing else ("stuff", cls.id)
            if key not in info:
                info[key] = {"id": len(info) + 1, "category_id": cls.id}
            out[item.ids == segment["id"]] = info[key]["id"]
        Image.fromarray(id_to_rgb(out)).save(self.pred_dir / item.png_name)
        self.pred_annotations.append(
            {"image_id": number, "file_name": item.png_name, "segments_info": list(info.values())}
        )

    def _semantic(self, item: PanopticImage, segments: list[dict], predicted: np.ndarray) -> None:
        asked = {s["id"]: k for s, k in zip(segments, predicted, strict=True)}
        unasked = len(self.classes)
        for segment in item.segments:
            truth = self.index.get(segment["category_id"])
            if truth is None:
                continue
            pixels = int((item.ids == segment["id"]).sum())
            self.confusion[truth, asked.get(segment["id"], unasked)] += pixels

    def _instances(self, item: PanopticImage, number: int, segments: list[dict], probabilities: np.ndarray) -> None:
        """The released selection: the top 100 (segment, class) pairs over every class, then the thing classes
        among them are the detections, each scored by its class probability."""
        things = [k for k, c in enumerate(self.classes) if c.isthing]
        for segment in item.segments:
            k = self.index.get(segment["category_id"])
            if k is None or not self.classes[k].isthing:
                continue
            self.instances.append(
                self._rle_annotation(item.ids == segment["id"], number, self.classes[k].id)
                | {"id": len(self.instances) + 1, "iscrowd": int(segment.get("iscrowd", 0))}
            )
        if not segments or not things:
            return
        order = np.argsort(-probabilities, axis=None, kind="stable")[:DETECTIONS_PER_IMAGE]
        for flat in order:
            row, k = divmod(int(flat), len(self.classes))
            if not self.classes[k].isthing:
                continue
            detection = self._rle_annotation(item.ids == segments[row]["id"], number, self.classes[k].id)
            self.detections.append(detection | {"score": float(probabilities[row, k])})

    @staticmethod
    def _rle_annotation(mask: np.ndarray, image_id: int, category_id: int) -> dict:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        return {
            "image_id": image_id, "category_id": category_id, "segmentation": rle,
            "area": float(mask_utils.area(rle)), "bbox": list(mask_utils.toBbox(rle)),
        }  # fmt: skip

    def miou(self) -> float:
        """detectron2's SemSegEvaluator: Σ IoU over classes with ground-truth pixels / the number of classes with
        any pixel, true or predicted (a class predicted but never present counts as 0)."""
        tp = np.diag(self.confusion[:, :-1]).astype(float)
        gt = self.confusion.sum(axis=1).astype(float)
        pred = self.confusion[:, :-1].sum(axis=0).astype(float)
        union = gt + pred - tp
        with_truth, with_any = gt > 0, union > 0
        if not with_any.any():
            return float("nan")
        return float(np.sum(tp[with_truth] / union[with_truth]) / with_any.sum())

    def ap(self, categories: list[dict]) -> float:
        if not self.instances:
            return float("nan")
        if not self.detections:
            return 0.0
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools narrates every step
            gt = COCO()
            gt.dataset = {"images": self.gt_images, "annotations": self.instances, "categories": categories}
            gt.createIndex()
            evaluator = COCOeval(gt, gt.loadRes(self.detections), iouType="segm")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return float(max(evaluator.stats[0], 0.0))

    def pq(self, out_dir: Path, gt_png_dir: Path, categories: list[dict]) -> dict:
        from hotcoco.panoptic import pq_compute

        gt_json, pred_json = out_dir / "panoptic_gt.json", out_dir / "panoptic_pred.json"
        gt_json.write_text(
            json.dumps({"images": self.gt_images, "annotations": self.gt_annotations, "categories": categories})
        )
        pred_json.write_text(json.dumps({"annotations": self.pred_annotations}))
        with contextlib.redirect_stdout(io.StringIO()):
            return pq_compute(str(gt_json), str(pred_json), gt_folder=str(gt_png_dir), pred_folder=str(self.pred_dir))


def evaluate_open_vocab(
    predictor: OspreyPredictor,
    dataset: PanopticSet,
    matcher: ClassMatcher,
    writer: ResultWriter,
    generation: Generation,
    limit: int = 0,
) -> OpenVocabScores:
    import hotcoco.panoptic  # noqa: F401 (checked before hours of generation, used at the end)

    results = _Accumulator(dataset, writer.out_dir)
    names = {c.id: c.name for c in dataset.classes}
    total = min(limit, len(dataset)) if limit else len(dataset)
    for item in tqdm(islice(dataset, limit or None), total=total, desc=f"open-vocab {dataset.layout}", unit="image"):
        present = set(np.unique(item.ids).tolist())
        segments = [s for s in item.segments if s["id"] in present][:MAX_REGIONS_PER_IMAGE]
        try:
            with Image.open(item.image_path) as image:
                rgb = np.asarray(image.convert("RGB"))
            if rgb.shape[:2] != item.ids.shape:
                raise ValueError(f"image {rgb.shape[:2]} and panoptic PNG {item.ids.shape} differ in size")
        except (OSError, ValueError) as exc:
            logger.warning("skipping image %s: %s", item.image_id, exc)
            results.skipped += 1
            continue
        frame = predictor.encode(rgb)
        answers: list[str] = []
        for start in range(0, len(segments), REGIONS_PER_PASS):  # (N, H, W) float masks: bounded memory
            chunk = segments[start : start + REGIONS_PER_PASS]
            answers += ask_regions(predictor, frame, [item.ids == s["id"] for s in chunk], QUESTION, generation)
        probabilities = matcher.probabilities(answers)
        results.add(item, segments, probabilities)
        for segment, answer, p in zip(segments, answers, probabilities, strict=True):
            k = int(p.argmax())
            writer.answer(
                image_id=item.image_id, segment_id=segment["id"], question=QUESTION, answer=answer,
                truth=names.get(segment["category_id"]), predicted=dataset.classes[k].name,
                probability=float(p[k]), correct=dataset.classes[k].id == segment["category_id"],
            )  # fmt: skip
    categories = [{"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in dataset.classes]
    pq = results.pq(writer.out_dir, dataset.png_dir, categories)
    return OpenVocabScores(
        images=len(results.gt_images),
        regions=results.regions,
        pq=pq["All"]["pq"],
        sq=pq["All"]["sq"],
        rq=pq["All"]["rq"],
        pq_things=pq["Things"]["pq"] if pq["Things"]["n"] else float("nan"),
        pq_stuff=pq["Stuff"]["pq"] if pq["Stuff"]["n"] else float("nan"),
        ap=results.ap([c for c in categories if c["isthing"]]),
        miou=results.miou(),
        region_accuracy=results.correct / results.regions if results.regions else float("nan"),
        skipped_images=results.skipped,
    )


def table(scores: OpenVocabScores, layout: str, model_name: str) -> str:
    out = Table(["model", "dataset", "images", "regions", "PQ", "AP", "mIoU", "region acc."])
    out.add(
        model_name, [layout, scores.images, scores.regions, scores.pq, scores.ap, scores.miou, scores.region_accuracy]
    )
    pq, ap, miou = PAPER.get(layout, (float("nan"),) * 3)
    out.add("Osprey-7B (paper)", [layout, "", "", f"{pq:.2f}", f"{ap:.2f}", f"{miou:.2f}", ""])
    return out.markdown()
