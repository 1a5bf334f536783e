"""Region captioning on RefCOCOg: METEOR and CIDEr.

The data are the released ``finetune_refcocog_val_with_mask.json``: COCO format where each image entry is
one referring expression (``caption``) and its annotation the region (``segmentation``); the image file is
the part of ``file_name`` after its last ``_`` (COCO's ``COCO_train2014_000000xxxxxx.jpg`` →
``000000xxxxxx.jpg``). Each region is asked "Please give me a short description of <region>."; the answer
keeps what follows a colon. Captions are tokenised by the PTB tokenizer and scored by pycocoevalcap's METEOR
and CIDEr one scorer at a time (its ``COCOEvalCap`` also runs SPICE, which downloads CoreNLP). METEOR and
the tokenizer run on Java; without ``java`` on the PATH the run stops before any generation.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from osprey_model import OspreyPredictor

from ..data.records import RecordError, decode_segmentation
from .common import Generation, ResultWriter, Table, after_colon, ask_regions

logger = logging.getLogger(__name__)

QUESTION = "Please give me a short description of <region>."
PAPER = (16.6, 108.3)  # Osprey-7B: METEOR, CIDEr


@dataclass
class CaptionScores:
    regions: int
    skipped: int
    meteor: float
    cider: float


def require_scorers() -> None:
    """Checked before any generation: a missing scorer would otherwise surface after hours of answers."""
    import pycocoevalcap  # noqa: F401

    if shutil.which("java") is None:
        raise RuntimeError("METEOR and the PTB tokenizer (pycocoevalcap) need Java: install a JRE, e.g. openjdk-17")


def caption_scores(references: dict[str, list[str]], candidates: dict[str, str]) -> tuple[float, float, dict]:
    """Corpus METEOR and CIDEr, and each item's CIDEr."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    refs = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    cands = tokenizer.tokenize({k: [{"caption": candidates[k]}] for k in references})
    cider, per_item = Cider().compute_score(refs, cands)
    meteor_scorer = Meteor()
    try:
        meteor, _ = meteor_scorer.compute_score(refs, cands)
    finally:
        _stop(meteor_scorer)
    return float(meteor), float(cider), dict(zip(refs, (float(s) for s in per_item), strict=True))


def _stop(meteor: Any) -> None:
    """End the METEOR JVM now. Its ``__del__`` would wait on a lock that a failed ``compute_score`` leaves
    held, so a Java error would hang the interpreter's exit."""
    meteor.meteor_p.kill()
    meteor.meteor_p.wait()
    if meteor.lock.locked():
        meteor.lock.release()


def evaluate_region_captioning(
    predictor: OspreyPredictor,
    annotation_file: Path,
    image_root: Path,
    writer: ResultWriter,
    generation: Generation,
    limit: int = 0,
) -> CaptionScores:
    require_scorers()
    data = json.loads(annotation_file.read_text())
    annotations = defaultdict(list)
    for annotation in data["annotations"]:
        annotations[annotation["image_id"]].append(annotation)
    entries = data["images"][: limit or None]
    by_file = defaultdict(list)  # one image is asked once for all its regions
    for entry in entries:
        by_file[entry["file_name"].split("_")[-1]].append(entry)
    references: defaultdict[str, list[str]] = defaultdict(list)
    candidates: dict[str, str] = {}
    skipped = 0
    for file_name, group in tqdm(by_file.items(), desc="region captioning", unit="image"):
        masks, keys = [], []
        for entry in group:
            if not entry.get("caption"):
                logger.warning("skipping image entry %s: no caption", entry.get("id"))
                skipped += 1
                continue
            for annotation in annotations[entry["id"]]:
                key = str(annotation["id"])
                references[key].append(entry["caption"])
                if key in keys:  # another expression for a region already asked
                    continue
                try:
                    masks.append(decode_segmentation(annotation["segmentation"], entry["height"], entry["width"]))
                except (RecordError, KeyError) as exc:
                    logger.warning("skipping annotation %s: %s", key, exc)
                    skipped += 1
                    continue
                keys.append(key)
        if not masks:
            continue
        try:
            with Image.open(image_root / file_name) as image:
                frame = predictor.encode(np.asarray(image.convert("RGB")))
            answers = ask_regions(predictor, frame, masks, QUESTION, generation)
        except (OSError, ValueError) as exc:
            logger.warning("skipping %s: %s", file_name, exc)
            skipped += len(masks)
            continue
        for key, answer in zip(keys, answers, strict=True):
            candidates[key] = after_colon(answer).strip()
            writer.answer(annotation_id=key, file_name=file_name, question=QUESTION, answer=answer)
    if not candidates:
        raise ValueError(f"{annotation_file}: no region could be read")
    scored = {key: references[key] for key in candidates}
    meteor, cider, per_item = caption_scores(scored, candidates)
    writer.item_scores([{"annotation_id": k, "references": scored[k], "cider": per_item[k]} for k in candidates])
    return CaptionScores(regions=len(candidates), skipped=skipped, meteor=meteor, cider=cider)


def table(scores: CaptionScores, model_name: str) -> str:
    out = Table(["model", "regions", "METEOR", "CIDEr"])
    out.add(model_name, [scores.regions, scores.meteor, scores.cider])
    out.add("Osprey-7B (paper)", ["", f"{PAPER[0]:.1f}", f"{PAPER[1]:.1f}"])
    return out.markdown()
