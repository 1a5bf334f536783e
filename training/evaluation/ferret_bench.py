"""Referring description and reasoning (Ferret-Bench): the answers, and a judge's scores when one is named.

The data are Ferret-Bench's ``box_refer_caption.json`` and ``box_refer_reason.json`` (JSON lines or one
list): ``question_id``, ``image``, ``category``, ``text`` with ``<region>`` where the region goes, and
``annotation`` with the region as ``segmentation`` (the box as a polygon) or ``bbox`` (x, y, w, h).
``<region>`` becomes the region's tokens; the answers go to ``answers.jsonl``.

The paper's scores come from GPT-4 as judge. With ``--judge-url`` (any OpenAI-compatible
``/chat/completions`` endpoint) and ``--references`` (reference answers with ``question_id`` and
``category``: the two files number their questions alike, from 0), each answer is rated beside its
reference on a 1–10 scale and a category's score is 100 × Σ model / Σ reference, as Ferret and LLaVA-Bench
report it; without a judge only the generation side runs. The judge's context here is the region's box
only (Ferret's also lists the image's COCO captions and boxes) and the rubric is this module's wording, so
scores are comparable between models judged here, not with the paper's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from osprey_model import OspreyPredictor

from ..data.records import RecordError, decode_segmentation
from .common import Generation, ResultWriter, Table
from .pope import read_questions

logger = logging.getLogger(__name__)

FILES = ("box_refer_caption.json", "box_refer_reason.json")
JUDGE_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
JUDGE_RULE = (
    "Two AI assistants answered the user's question about the marked region of an image, described by the "
    "context above. Rate the helpfulness, relevance, accuracy and level of detail of each answer with an "
    "overall score from 1 to 10, higher is better. Output one line with only the two scores, for Assistant "
    "1 and Assistant 2, separated by a space; then, on the following lines, explain your ratings briefly."
)
_SCORES = re.compile(r"(\d+(?:\.\d+)?)[\s,]+(\d+(?:\.\d+)?)")


@dataclass
class Judge:
    url: str  # the endpoint's base URL, e.g. http://localhost:8000/v1
    model: str
    api_key: str | None = None
    timeout_s: float = 120.0

    def rate(self, context: str, question: str, reference: str, answer: str) -> tuple[float, float]:
        """(reference score, answer score); ValueError when the reply has no two scores on its first line."""
        content = (
            f"[Context]\n{context}\n\n[Question]\n{question}\n\n[Assistant 1]\n{reference}\n\n[End of Assistant 1]"
            f"\n\n[Assistant 2]\n{answer}\n\n[End of Assistant 2]\n\n[System]\n{JUDGE_RULE}\n"
        )
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}],
            "temperature": 0.2,
        }
        request = urllib.request.Request(
            self.url.rstrip("/") + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}
            | ({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}),
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            reply = json.loads(response.read())["choices"][0]["message"]["content"]
        first = reply.strip().splitlines()[0] if reply.strip() else ""
        match = _SCORES.search(first)
        if not match:
            raise ValueError(f"the judge's first line holds no two scores: {first!r}")
        return float(match.group(1)), float(match.group(2))


def judge_from_env(url: str | None, model: str, key_env: str) -> Judge | None:
    return Judge(url, model, os.environ.get(key_env)) if url else None


@dataclass
class FerretScores:
    questions: int = 0
    judged: int = 0
    skipped: int = 0
    by_category: dict[str, float] = field(default_factory=dict)  # 100 × Σ answer / Σ reference


def region_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    if annotation.get("segmentation"):
        return decode_segmentation(annotation["segmentation"], height, width)
    x, y, w, h = (round(v) for v in annotation["bbox"])
    mask = np.zeros((height, width), bool)
    mask[max(y, 0) : y + h, max(x, 0) : x + w] = True
    if not mask.any():
        raise RecordError(f"empty box {annotation['bbox']}")
    return mask


def evaluate_ferret_bench(
    predictor: OspreyPredictor,
    data: Path,
    image_root: Path,
    writer: ResultWriter,
    generation: Generation,
    judge: Judge | None = None,
    references: References | None = None,
    limit: int = 0,
) -> FerretScores:
    if judge is not None and not references:
        raise ValueError("a judge compares each answer with a reference answer: give --references")
    questions = [q for name in FILES if (data / name).is_file() for q in read_questions(data / name)]
    if not questions:
        raise FileNotFoundError(f"none of {', '.join(FILES)} under {data}")
    questions = questions[: limit or None]
    scores = FerretScores()
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for item in tqdm(questions, desc="Ferret-Bench", unit="question"):
        try:
            with Image.open(image_root / item["image"]) as image:
                rgb = np.asarray(image.convert("RGB"))
            mask = region_mask(item["annotation"], *rgb.shape[:2])
            answer = predictor.describe(
                rgb,
                [mask],
                prompt=item["text"],
                max_new_tokens=generation.max_new_tokens,
                temperature=generation.temperature,
            )[0].strip()  # fmt: skip  (kept whole, as the released script keeps it)
        except (OSError, KeyError, ValueError, RecordError) as exc:
            logger.warning("skipping question %s: %s", item.get("question_id"), exc)
            scores.skipped += 1
            continue
        scores.questions += 1
        record = {"question_id": item.get("question_id"), "image": item["image"], "category": item.get("category")}
        record |= {"question": item["text"], "answer": answer}
        reference = reference_for(references or {}, item)
        if judge is not None and reference is not None:
            x, y, w, h = item["annotation"].get("bbox", (0, 0, 0, 0))
            context = (
                f"The region is the box x={x}, y={y}, width={w}, height={h} of a {rgb.shape[1]}x{rgb.shape[0]} image."
            )
            try:
                ref_score, answer_score = judge.rate(context, item["text"], reference, record["answer"])
            except (ValueError, OSError, KeyError) as exc:
                logger.warning("judge failed on %s: %s", item.get("question_id"), exc)
            else:
                scores.judged += 1
                sums[str(item.get("category"))][0] += ref_score
                sums[str(item.get("category"))][1] += answer_score
                record |= {"reference_score": ref_score, "answer_score": answer_score}
        writer.answer(**record)
    scores.by_category = {k: 100 * v[1] / v[0] for k, v in sums.items() if v[0] > 0}
    return scores


References = dict[tuple[str | None, str], str]


def read_references(*paths: Path) -> References:
    """Reference answers (Ferret's GPT-4 answer files): JSON lines or lists of ``{question_id, text}`` with
    the question's ``category``, keyed by (category, question_id)."""
    return {
        (r.get("category"), str(r["question_id"])): r.get("text") or r.get("answer", "")
        for path in paths
        for r in read_questions(path)
    }


def reference_for(references: References, item: dict) -> str | None:
    """By (category, question_id); a reference without a category matches any (one file per run)."""
    key = str(item.get("question_id"))
    return references.get((item.get("category"), key), references.get((None, key)))


def table(scores: FerretScores, model_name: str) -> str:
    if not scores.by_category:
        out = Table(["model", "questions", "judged", "score"])
        out.add(model_name, [scores.questions, scores.judged, "no judge named (generation only)"])
        return out.markdown()
    out = Table(["model", "questions", "judged", *scores.by_category])
    out.add(model_name, [scores.questions, scores.judged, *(f"{v:.1f}" for v in scores.by_category.values())])
    return out.markdown()
