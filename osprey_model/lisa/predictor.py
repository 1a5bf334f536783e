"""Reasoning segmentation: a query about an image in, the answer text and one mask per ``[SEG]`` out.

The flow of ``OspreyPredictor``: CLIP's image tokens and SAM's image embedding are computed once per frame
(kept in the frame's ``FrameFeatures`` beside Osprey's and the segmenter's), and any number of queries
about that frame then cost the language model and SAM's small decoder only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessor, PreTrainedTokenizerBase

from ..frame_features import FrameFeatures
from ..image_processing import CLIP_MEAN, CLIP_STD, ImageInput, ImageLimits, to_rgb_array
from ..sam import SamFrame, SamSegmenter
from .generation import SegGeneration, generate_batch_with_seg, generate_with_seg
from .modeling_lisa import LisaForCausalLM
from .prompting import LisaTokens, answer_text, load_lisa_tokenizer, tokenize_lisa_prompt


@dataclass
class LisaFrame:
    """One image's CLIP tokens (projected) and SAM embedding."""

    image_tokens: torch.Tensor  # (P, hidden)
    sam: SamFrame

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.sam.image_hw


@dataclass
class LisaResult:
    answer: str  # e.g. "Sure, [SEG]."
    masks: np.ndarray  # (N, H, W) bool, one per [SEG] in the answer, in order; N may be 0
    scores: np.ndarray  # (N,) SAM's predicted IoU of each mask
    tokens: list[int]  # the answer's ids


def clip_image_processor(clip_dir: Path | None, image_size: int) -> CLIPImageProcessor:
    """The tower's own processor if its folder has one, else CLIP's (short side to S, bicubic, centre crop)."""
    if clip_dir is not None and (clip_dir / "preprocessor_config.json").is_file():
        return CLIPImageProcessor.from_pretrained(str(clip_dir), local_files_only=True)
    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        resample=Image.Resampling.BICUBIC,
        do_center_crop=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


class LisaPredictor:
    def __init__(
        self,
        model: LisaForCausalLM,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: CLIPImageProcessor,
        image_limits: ImageLimits | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokens = LisaTokens.of(tokenizer)
        self.image_processor = image_processor
        self.image_limits = image_limits or ImageLimits()
        self.segmenter = SamSegmenter(model.visual_model, self.image_limits)

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        clip_dir: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        image_limits: ImageLimits | None = None,
    ) -> LisaPredictor:
        model = LisaForCausalLM.from_pretrained(model_dir, clip_dir, device=device, dtype=dtype)
        from .modeling_lisa import resolve_clip_dir

        found_clip = resolve_clip_dir(Path(model_dir), model.config, clip_dir)
        assert model.vision_tower is not None
        processor = clip_image_processor(found_clip, model.vision_tower.config.image_size)
        return cls(model, load_lisa_tokenizer(model_dir), processor, image_limits)

    # ---- frames -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_clip(self, rgb: np.ndarray) -> torch.Tensor:
        self.image_limits.check(*rgb.shape[:2])
        pixels = self.image_processor(images=rgb, return_tensors="pt", input_data_format="channels_last")
        return self.model.encode_images(pixels["pixel_values"])[0]

    def frame(self, image: ImageInput | FrameFeatures | LisaFrame) -> LisaFrame:
        """The frame's CLIP tokens and SAM embedding: given, cached in ``FrameFeatures``, or computed now."""
        if isinstance(image, LisaFrame):
            return image
        features = image if isinstance(image, FrameFeatures) else FrameFeatures(to_rgb_array(image))
        return LisaFrame(
            image_tokens=features.get("lisa-clip", self.encode_clip),
            sam=features.get("lisa-sam", self.segmenter.encode),
        )

    # ---- queries ------------------------------------------------------------------------------------
    def prompt_ids(self, query: str, max_new_tokens: int) -> torch.Tensor:
        """Checked before any encoding: a bad query costs nothing."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        ids = tokenize_lisa_prompt(self.tokenizer, query, self.model.config.question_first)
        length = len(ids) - 1 + self.model.image_token_count + max_new_tokens
        limit = self.model.config.max_position_embeddings
        if length > limit:
            raise ValueError(
                f"the query is too long: prompt, image and answer take {length} positions, the model has {limit}"
            )
        return torch.tensor(ids)

    @torch.inference_mode()
    def segment(
        self, image: ImageInput | FrameFeatures | LisaFrame, query: str, max_new_tokens: int = 64
    ) -> LisaResult:
        """The answer and one mask per ``[SEG]`` at the image's size. An answer without ``[SEG]`` is a result
        with no masks, not an error."""
        ids = self.prompt_ids(query, max_new_tokens)
        frame = self.frame(image)
        embeds = self.model.splice(ids, frame.image_tokens)
        generated = generate_with_seg(
            self.model,
            embeds,
            seg_token_id=self.tokens.seg,
            eos_token_id=self.tokenizer.eos_token_id,
            max_new_tokens=max_new_tokens,
        )
        return self._results(frame, [generated])[0]

    @torch.inference_mode()
    def segment_many(
        self, image: ImageInput | FrameFeatures | LisaFrame, queries: list[str], max_new_tokens: int = 64
    ) -> list[LisaResult]:
        """Several queries about one frame in one pass: the frame encoded once, the answers decoded as one
        batch, every mask of every answer from one SAM decoder call. Same answers as one query at a time."""
        if not queries:
            raise ValueError("no query given")
        ids = [self.prompt_ids(query, max_new_tokens) for query in queries]
        frame = self.frame(image)
        generated = generate_batch_with_seg(
            self.model,
            [self.model.splice(row, frame.image_tokens) for row in ids],
            seg_token_id=self.tokens.seg,
            eos_token_id=self.tokenizer.eos_token_id,
            max_new_tokens=max_new_tokens,
        )
        return self._results(frame, generated)

    def _results(self, frame: LisaFrame, generated: list[SegGeneration]) -> list[LisaResult]:
        """Masks for every [SEG] state of every answer, decoded by SAM together, then split per answer."""
        height, width = frame.image_hw
        counts = [len(g.seg_states) for g in generated]
        masks, scores = np.zeros((0, height, width), bool), np.zeros(0, np.float32)
        if sum(counts):
            prompts = self.model.seg_prompts(torch.cat([g.seg_states for g in generated]))
            low_res, iou = self.segmenter.decode_prompt_embeddings(frame.sam, prompts)
            masks = self.segmenter.upscale(frame.sam, low_res)[:, 0]
            scores = iou[:, 0].cpu().numpy()
        bounds = np.cumsum([0, *counts])
        return [
            LisaResult(
                answer=answer_text(self.tokenizer, g.tokens),
                masks=masks[start:end],
                scores=scores[start:end],
                tokens=g.tokens,
            )
            for g, start, end in zip(generated, bounds[:-1], bounds[1:], strict=True)
        ]
