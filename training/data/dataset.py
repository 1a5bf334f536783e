"""A torch Dataset over records: image pixels, region masks in prompt order, ids and labels."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from osprey_model.image_processing import OspreyImageProcessor

from .encoding import SampleError, encode_conversation, region_text
from .records import Record, RecordError, decode_segmentation

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    id: str
    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor  # (3, S, S)
    masks: torch.Tensor  # (N, H, W) float, in the order of the <mask> tokens


class RegionDataset(Dataset):
    """Bad records are reported with their id and yield None; ``collate`` leaves them out."""

    def __init__(
        self,
        records: list[Record],
        tokenizer: PreTrainedTokenizerBase,
        image_size: int,
        image_token_count: int,
        max_length: int,
        box_prompts: bool = False,
    ) -> None:
        self.records = records
        self.tokenizer = tokenizer
        self.processor = OspreyImageProcessor(image_size)
        self.image_token_count = image_token_count
        self.max_length = max_length
        self.box_prompts = box_prompts  # replace every mask by its filled bounding box (the paper's comparison)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample | None:
        record = self.records[index]
        try:
            return self._sample(record)
        except (SampleError, RecordError, OSError) as exc:
            logger.warning("skipping record %s: %s", record.id, exc)
            return None

    def masks(self, record: Record) -> list[np.ndarray]:
        masks = [decode_segmentation(s, record.height, record.width) for s in record.segmentations]
        return [box_of(m) for m in masks] if self.box_prompts else masks

    def _sample(self, record: Record) -> Sample:
        turns, order = region_text(record.turns, len(record.segmentations))
        input_ids, labels = encode_conversation(
            self.tokenizer,
            turns,
            image_token_count=self.image_token_count,
            max_length=self.max_length,
            sample_id=record.id,
        )
        with Image.open(record.image) as image:
            rgb = np.asarray(image.convert("RGB"))
        masks = self.masks(record) if order else []
        kept = int((input_ids == self.tokenizer.convert_tokens_to_ids("<mask>")).sum())
        chosen = [masks[i] for i in order[:kept]]
        height, width = rgb.shape[:2]
        mask_tensor = torch.from_numpy(np.stack(chosen)).float() if chosen else torch.zeros(0, height, width)
        return Sample(record.id, input_ids, labels, self.processor(rgb)[0], mask_tensor)


def box_of(mask: np.ndarray) -> np.ndarray:
    """The filled bounding box of a mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = np.zeros_like(mask)
    box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    return box


def collate(batch: list[Sample | None]) -> dict | None:
    samples = [s for s in batch if s is not None]
    if not samples:
        return None
    return {
        "ids": [s.id for s in samples],
        "input_ids": [s.input_ids for s in samples],
        "labels": [s.labels for s in samples],
        "pixel_values": torch.stack([s.pixel_values for s in samples]),
        "masks": [s.masks for s in samples],
    }
