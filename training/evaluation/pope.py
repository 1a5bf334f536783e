"""Object hallucination (POPE): accuracy, precision, recall, F1 and yes-ratio per split.

The data are POPE's JSON-lines files ``coco_pope_{random,popular,adversarial}.json``: ``image``, ``text``
(the question, "Is there a dog in the image?") and ``label`` (yes / no). The model gets the whole image
and "<image>\\n" + question, no region, as the released evaluation asks Osprey-Chat. An answer is "no" when,
in its text before the first ".", with commas removed, one of the words is "No", "no" or "not"; otherwise
"yes" (the released parser).
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
from osprey_model.predictor import EncodedFrame

from .common import Generation, ResultWriter, Table

logger = logging.getLogger(__name__)

SPLITS = ("random", "popular", "adversarial")
PAPER = {"random": 89.47, "popular": 87.83, "adversarial": 85.33}  # Osprey-Chat accuracy


@dataclass
class PopeScores:
    questions: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float


def says_yes(answer: str) -> bool:
    words = answer.split(".")[0].replace(",", "").split(" ")
    return not any(word in ("No", "not", "no") for word in words)


def pope_scores(predicted_yes: list[bool], label_yes: list[bool]) -> PopeScores:
    pairs = list(zip(predicted_yes, label_yes, strict=True))
    if not pairs:
        raise ValueError("no questions to score")
    tp = sum(p and t for p, t in pairs)
    fp = sum(p and not t for p, t in pairs)
    tn = sum(not p and not t for p, t in pairs)
    fn = sum(not p and t for p, t in pairs)
    n = len(pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PopeScores(n, (tp + tn) / n, precision, recall, f1, (tp + fp) / n)


def read_questions(path: Path) -> list[dict]:
    """JSON lines (POPE's own files) or one JSON list; a line that does not parse is logged and skipped."""
    text = path.read_text()
    if text.lstrip().startswith("["):
        return json.loads(text)
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            logger.warning("%s:%d skipped: %s", path, number, exc)
    return out


def pope_file(data: Path, split: str) -> Path:
    for name in (f"coco_pope_{split}.json", f"coco_pope_{split}.jsonl", f"{split}.json"):
        if (data / name).is_file():
            return data / name
    raise FileNotFoundError(f"no coco_pope_{split}.json under {data}")


def evaluate_pope_split(
    predictor: OspreyPredictor,
    question_file: Path,
    image_root: Path,
    writer: ResultWriter,
    generation: Generation,
    split: str,
    limit: int = 0,
) -> PopeScores:
    questions = read_questions(question_file)[: limit or None]
    predicted, labels = [], []
    frames: dict[str, EncodedFrame] = {}  # POPE asks six questions of each image: encode it once
    for item in tqdm(questions, desc=f"POPE {split}", unit="question"):
        try:
            path = image_root / item["image"]
            if not path.is_file():
                path = image_root / item["image"].split("_")[-1]
            key = str(path)
            if key not in frames:
                frames.clear()
                with Image.open(path) as image:
                    frames[key] = predictor.encode(np.asarray(image.convert("RGB")))
            answer = predictor.ask(
                frames[key], item["text"], max_new_tokens=generation.max_new_tokens, temperature=generation.temperature
            ).lower()
            label = item["label"]
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("%s: skipping question %s: %s", split, item.get("question_id"), exc)
            continue
        predicted.append(says_yes(answer))
        labels.append(label != "no")
        writer.answer(
            split=split, question_id=item.get("question_id"), image=item["image"], question=item["text"],
            answer=answer, label=label, correct=predicted[-1] == labels[-1],
        )  # fmt: skip
    return pope_scores(predicted, labels)


def table(scores: dict[str, PopeScores], model_name: str) -> str:
    out = Table(["model", "split", "questions", "accuracy", "precision", "recall", "F1", "yes-ratio"])
    for split, s in scores.items():
        out.add(model_name, [split, s.questions, s.accuracy, s.precision, s.recall, s.f1, s.yes_ratio])
    for split in scores:
        out.add("Osprey-Chat (paper)", [split, "", f"{PAPER[split]:.2f}", "", "", "", ""])
    return out.markdown()
