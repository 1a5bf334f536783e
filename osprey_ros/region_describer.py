"""What the node asks the model for each region, and the geometry it reports beside the text.

The node's only door to the model: it calls the predictor's public API (encode, describe) and knows
nothing of its internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from osprey_model import FrameFeatures, OspreyPredictor
from osprey_model.conversation import ATTRIBUTE_QUESTIONS, SHORT_ANSWER_SUFFIX, conversation_question
from osprey_model.frame_features import EncoderRuns

PROMPT_MODES = ("short", "category", "detailed")


@dataclass
class RegionResult:
    id: int
    label: str
    description: str
    bbox: tuple[int, int, int, int]  # x, y, width, height
    area: int
    confidence: float = 0.0  # mean probability of the label's tokens
    attributes: dict[str, str] = field(default_factory=dict)  # attribute name → short answer
    reused: bool = False  # the text is an earlier frame's: the region's mask barely changed since


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)


class RegionDescriber:
    def __init__(
        self, predictor: OspreyPredictor, prompt_mode: str, max_new_tokens: int, attributes: tuple[str, ...] = ()
    ) -> None:
        if prompt_mode not in PROMPT_MODES:
            raise ValueError(f"prompt_mode must be one of {PROMPT_MODES}, got {prompt_mode!r}")
        unknown = [name for name in attributes if name not in ATTRIBUTE_QUESTIONS]
        if unknown:
            raise ValueError(f"unknown attributes {unknown}: choose from {', '.join(ATTRIBUTE_QUESTIONS)}")
        self.predictor = predictor
        self.prompt_mode = prompt_mode
        self.max_new_tokens = max_new_tokens
        self.attributes = attributes
        self.encoder_runs = EncoderRuns()  # frames Osprey's encoder ran on (a cached frame's features are reused)

    def describe(self, frame: FrameFeatures, masks: list[np.ndarray], ids: list[int]) -> list[RegionResult]:
        """Label (and, in detailed mode, describe) every mask. Raises ValueError for bad masks."""
        label_prompt = "category" if self.prompt_mode == "category" else "short"
        with self.encoder_runs.counting(frame):
            labels = self.predictor.describe_scored(
                frame, masks, prompt=label_prompt, max_new_tokens=self.max_new_tokens
            )
        details = (
            self.predictor.describe(frame, masks, prompt="detailed", max_new_tokens=self.max_new_tokens)
            if self.prompt_mode == "detailed"
            else [""] * len(masks)
        )
        attributes: list[dict[str, str]] = [{} for _ in masks]
        for name in self.attributes:  # one batched pass per question, its prefix shared by every region
            if name == "category" and label_prompt == "category":
                answers = [label.text for label in labels]  # asked already
            else:
                answers = self.predictor.describe(
                    frame, masks, prompt=ATTRIBUTE_QUESTIONS[name], max_new_tokens=self.max_new_tokens
                )
            for region, answer in zip(attributes, answers, strict=True):
                region[name] = answer
        return [
            RegionResult(
                id=region_id, label=label.text, description=detail, bbox=mask_box(mask), area=int(mask.sum()),
                confidence=label.confidence, attributes=attrs,
            )
            for region_id, mask, label, detail, attrs in zip(ids, masks, labels, details, attributes, strict=True)
        ]  # fmt: skip

    def answer(self, frame: FrameFeatures, masks: list[np.ndarray], question: str, max_new_tokens: int) -> list[str]:
        prompt = question.strip() or "short"
        with self.encoder_runs.counting(frame):
            return self.predictor.describe(
                frame, masks, prompt=prompt, max_new_tokens=max_new_tokens or self.max_new_tokens
            )

    def yes_probabilities(self, frame: FrameFeatures, masks: list[np.ndarray], query: str) -> list[float]:
        """P(yes) that each region is ``query`` ("Is region1 <query>?", as the robustness data ask), all
        regions in one batched question."""
        from .region_finder import yes_probability

        question = conversation_question(f"Is <region1> {query.strip().rstrip('?')}?" + SHORT_ANSWER_SUFFIX)
        with self.encoder_runs.counting(frame):
            answers = self.predictor.describe_scored(frame, masks, prompt=question, max_new_tokens=3)
        return [yes_probability(answer.text, answer.confidence) for answer in answers]
