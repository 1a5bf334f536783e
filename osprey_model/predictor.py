"""Describe regions of an image: encode the frame once, then answer any number of region prompts.

The flow of segment-anything's ``SamPredictor``: the heavy encoder runs once per frame (``encode``);
questions about that frame reuse the cached features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase

from .batched_generation import PrefixCache, generate_regions
from .conversation import image_question_prompt, multi_region_prompt, single_region_prompt
from .encoders import EncoderBackend, TorchEncoder, create_encoder
from .frame_features import FrameFeatures
from .image_processing import ImageInput, ImageLimits, OspreyImageProcessor, masks_to_tensor, to_rgb_array
from .modeling_osprey import ImageFeatures, OspreyForCausalLM
from .tokenization import add_region_tokens, load_tokenizer, tokenize_prompt

MaskInput = list[np.ndarray] | np.ndarray | torch.Tensor


@dataclass
class EncodedFrame:
    """A frame's vision features, reusable for any number of region questions."""

    features: ImageFeatures
    image_hw: tuple[int, int]


FrameInput = ImageInput | EncodedFrame | FrameFeatures


@dataclass(frozen=True)
class RegionAnswer:
    text: str
    confidence: float  # mean probability of the answer's tokens, 0..1


def _image_hw(image: FrameInput) -> tuple[int, int]:
    """The size masks must have; checked before any encoding so that bad masks cost nothing."""
    if isinstance(image, EncodedFrame | FrameFeatures):
        return image.image_hw
    height, width = to_rgb_array(image).shape[:2]
    return height, width


class OspreyPredictor:
    def __init__(
        self,
        model: OspreyForCausalLM,
        tokenizer: PreTrainedTokenizerBase,
        encoder: EncoderBackend | None = None,
        image_limits: ImageLimits | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.encoder = encoder or TorchEncoder(model.vision_tower)
        model.set_region_token_ids(*add_region_tokens(tokenizer))
        self.processor = OspreyImageProcessor(model.config.vision.image_size, image_limits)
        self.image_token_count = (model.config.vision.image_size // model.vision_tower.strides[2]) ** 2
        self.prefix_cache = PrefixCache(max_entries=4)
        # "shared": the prompt prefix's KV once for all regions (bench/results/shared-prefix-cpu.md: 300 regions
        # in 12x less memory, 8.5x faster than a copy per region; as fast or faster at 1-16 regions); or
        # "dynamic" (a copy per region), "static" / "static-compiled" (GPU: CUDA graphs); see generate_regions.
        self.decode = "shared"
        self.max_regions_per_pass = 0  # "shared": regions decoded together at most (0 = all)

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        clip_path: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        encoder_backend: str = "torch",
        image_limits: ImageLimits | None = None,
    ) -> OspreyPredictor:
        """``encoder_backend``: torch, compile, onnxruntime or tensorrt (falls back, logging why)."""
        model = OspreyForCausalLM.from_pretrained(model_dir, clip_path, device=device, dtype=dtype)
        encoder = create_encoder(encoder_backend, model.vision_tower)
        return cls(model, load_tokenizer(model_dir), encoder, image_limits)

    @torch.inference_mode()
    def encode(self, image: ImageInput) -> EncodedFrame:
        rgb = to_rgb_array(image)
        features = self.model.encode_images(None, vision_levels=self.encoder(self.processor(rgb)))
        return EncodedFrame(features=features, image_hw=rgb.shape[:2])

    def frame(self, image: FrameInput) -> EncodedFrame:
        """The frame's features: given, cached in ``FrameFeatures`` (computed there on first use), or new."""
        if isinstance(image, EncodedFrame):
            return image
        if isinstance(image, FrameFeatures):
            return image.get("osprey", self.encode)
        return self.encode(image)

    def describe(
        self,
        image: FrameInput,
        masks: MaskInput,
        prompt: str = "short",
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        batched: bool = True,
    ) -> list[str]:
        """One answer per mask; each region is asked on its own prompt, as the released model is used.

        ``prompt`` is a preset (``short``, ``detailed``, ``category``) or a free question that may name the
        region as ``<region>``. Greedy unless ``temperature`` > 0. ``batched`` answers all regions in one
        pass over a shared, cached prompt prefix (same greedy tokens); ``False`` is the released
        one-region-per-call path, kept as the baseline.
        """
        if batched:
            return [answer.text for answer in self.describe_scored(image, masks, prompt, max_new_tokens, temperature)]
        mask_tensor, ids, frame = self._region_request(image, masks, prompt, max_new_tokens)
        return [
            self._generate(frame, ids, mask_tensor[i : i + 1], max_new_tokens, temperature)
            for i in range(len(mask_tensor))
        ]

    def describe_scored(
        self,
        image: FrameInput,
        masks: MaskInput,
        prompt: str = "short",
        max_new_tokens: int = 64,
        temperature: float = 0.0,
    ) -> list[RegionAnswer]:
        """``describe``'s batched path, each answer with its confidence (mean token probability)."""
        mask_tensor, ids, frame = self._region_request(image, masks, prompt, max_new_tokens)
        with torch.inference_mode():
            mask_tokens, pos_tokens = self.model.encode_regions(frame.features, 0, mask_tensor)
            outputs = generate_regions(
                self.model,
                frame.features,
                ids,
                mask_tokens,
                pos_tokens,
                max_new_tokens=max_new_tokens,
                eos_token_id=self.tokenizer.eos_token_id,
                temperature=temperature,
                prefix_cache=self.prefix_cache,
                decode=self.decode,
                max_regions_per_pass=self.max_regions_per_pass,
            )
        eos = self.tokenizer.eos_token_id
        return [
            RegionAnswer(self.tokenizer.decode(out.tokens, skip_special_tokens=True).strip(), out.confidence(eos))
            for out in outputs
        ]

    def _region_request(
        self, image: FrameInput, masks: MaskInput, prompt: str, max_new_tokens: int
    ) -> tuple[torch.Tensor, torch.Tensor, EncodedFrame]:
        """Masks and prompt checked before the frame is encoded: a bad request costs no encoder run."""
        mask_tensor = masks_to_tensor(masks, _image_hw(image))
        ids = self._checked_ids(single_region_prompt(prompt), max_new_tokens)
        return mask_tensor, ids, self.frame(image)

    def chat(
        self,
        image: FrameInput,
        masks: MaskInput,
        turns: list[tuple[str, str | None]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> str:
        """Answer the last question of a multi-turn chat about all ``masks`` (``<region1>``, ``<region2>``…)."""
        mask_tensor = masks_to_tensor(masks, _image_hw(image))
        ids = self._checked_ids(multi_region_prompt(len(mask_tensor), turns), max_new_tokens)
        frame = self.frame(image)
        return self._generate(frame, ids, mask_tensor, max_new_tokens, temperature)

    def ask(self, image: FrameInput, question: str, max_new_tokens: int = 64, temperature: float = 0.0) -> str:
        """A question about the whole image, no region ("<image>\n" + question), as POPE asks Osprey-Chat."""
        if not question.strip():
            raise ValueError("empty question")
        ids = self._checked_ids(image_question_prompt(question), max_new_tokens)
        frame = self.frame(image)
        height, width = frame.image_hw
        return self._generate(frame, ids, torch.zeros(0, height, width), max_new_tokens, temperature)

    def _checked_ids(self, prompt: str, max_new_tokens: int) -> torch.Tensor:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        ids = tokenize_prompt(self.tokenizer, prompt)
        length = len(ids) - 1 + self.image_token_count
        limit = self.model.config.max_length
        if length >= limit:
            raise ValueError(
                f"the prompt takes {length} tokens with the image, the context allows {limit}: "
                "ask about fewer regions at once"
            )
        return torch.tensor(ids)

    @torch.inference_mode()
    def _generate(
        self, frame: EncodedFrame, ids: torch.Tensor, masks: torch.Tensor, max_new_tokens: int, temperature: float
    ) -> str:
        if len(masks):
            mask_tokens, pos_tokens = self.model.encode_regions(frame.features, 0, masks)
        else:  # a question about the whole image
            width = self.model.config.hidden_size
            mask_tokens = pos_tokens = frame.features.image_tokens.new_zeros(0, width)
        embeds, _ = self.model.splice(
            ids.to(self.model.device), frame.features.image_tokens[0], mask_tokens, pos_tokens
        )
        room = self.model.config.max_position_embeddings - len(embeds)
        config = GenerationConfig(
            max_new_tokens=min(max_new_tokens, room),
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=None,
            top_k=None,
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id,
        )
        output = self.model.language_model.generate(
            inputs_embeds=embeds[None],
            attention_mask=torch.ones((1, len(embeds)), dtype=torch.long, device=embeds.device),
            generation_config=config,
        )
        return self.tokenizer.decode(output[0], skip_special_tokens=True).strip()
