"""Osprey: ConvNeXt CLIP trunk → mask-aware extractor + projector → LLaMA (Vicuna) decoder.

Our module names (``language_model``, ``projector``, ``mask_extractor``, ``vision_tower``) map onto the
released state-dict names in one place, ``released_name`` / ``own_name`` below.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from . import checkpoint_io
from .config import FEATURE_LEVELS, OspreyConfig
from .mask_extractor import MaskExtractor
from .precision import keep_rotary_in_float32
from .projector import build_projector
from .vision_tower import ClipConvNeXtVisionTower

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200  # stands for the image tokens in input_ids until they are spliced in

# Released keys that the released code ignores: the tower comes from the open_clip file, and
# transformers 4.31 stored rotary caches as buffers.
_IGNORED_RELEASED_PREFIXES = ("model.vision_tower.",)
_IGNORED_RELEASED_SUFFIXES = (".rotary_emb.inv_freq",)


def own_name(released: str) -> str | None:
    """Our parameter name for a released checkpoint key; None for keys the released code ignores."""
    if released.startswith(_IGNORED_RELEASED_PREFIXES) or released.endswith(_IGNORED_RELEASED_SUFFIXES):
        return None
    if released.startswith("model.mm_projector."):
        return "projector." + released[len("model.mm_projector.") :]
    if released.startswith("mask_extractor."):
        return released
    if released.startswith(("model.", "lm_head.")):
        return "language_model." + released
    raise checkpoint_io.CheckpointError(f"unexpected key in checkpoint: {released}")


def released_name(own: str) -> str | None:
    """The released checkpoint key for one of our parameters; None for the vision tower (not saved)."""
    if own.startswith("vision_tower."):
        return None
    if own.startswith("projector."):
        return "model.mm_projector." + own[len("projector.") :]
    if own.startswith("language_model."):
        return own[len("language_model.") :]
    return own


@dataclass
class ImageFeatures:
    """What the vision side produces for a batch of images, computed once per frame."""

    levels: dict[str, torch.Tensor]  # res2..res5, (B, C, h, w)
    image_tokens: torch.Tensor  # (B, T, hidden) projected image tokens


class OspreyForCausalLM(nn.Module):
    def __init__(self, config: OspreyConfig, *, llm_device: str | torch.device | None = None) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = ClipConvNeXtVisionTower(config.vision)
        channels = self.vision_tower.channels
        image_level = FEATURE_LEVELS.index(config.vision.image_token_level)
        self.projector = build_projector(channels[image_level], config.hidden_size)
        self.mask_extractor = MaskExtractor(config.mask_extractor, channels, config.hidden_size)
        with torch.device(llm_device) if llm_device is not None else contextlib.nullcontext():
            self.language_model = LlamaForCausalLM(config.llama_config())
        keep_rotary_in_float32(self.language_model, self.language_model.config)
        self.mask_token_id: int | None = None
        self.pos_token_id: int | None = None

    # ---- vision side -------------------------------------------------------------------------------
    def set_region_token_ids(self, mask_token_id: int, pos_token_id: int) -> None:
        self.mask_token_id, self.pos_token_id = mask_token_id, pos_token_id

    @property
    def region_token_ids(self) -> tuple[int, int]:
        """The tokenizer's ``<mask>`` and ``<pos>`` ids; the splice needs them."""
        if self.mask_token_id is None or self.pos_token_id is None:
            raise RuntimeError("call set_region_token_ids() with the tokenizer's <mask>/<pos> ids first")
        return self.mask_token_id, self.pos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.projector.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    def encode_images(
        self, pixel_values: torch.Tensor | None, vision_levels: dict[str, torch.Tensor] | None = None
    ) -> ImageFeatures:
        """The frozen tower runs without gradients in every stage; the projector may train.

        ``vision_levels``: the tower's outputs computed earlier (the tower is frozen, so a trainer may
        cache them per image); then ``pixel_values`` is not used.
        """
        if vision_levels is None:
            if pixel_values is None:
                raise ValueError("encode_images needs pixel_values or the tower's cached vision_levels")
            with torch.no_grad():
                vision_levels = self.vision_tower(pixel_values.to(self.device, self.vision_tower_dtype))
        levels = {name: feats.to(self.device, self.dtype) for name, feats in vision_levels.items()}
        tokens = levels[self.config.vision.image_token_level].flatten(2).transpose(1, 2)
        return ImageFeatures(levels=levels, image_tokens=self.projector(tokens))

    @property
    def vision_tower_dtype(self) -> torch.dtype:
        return next(self.vision_tower.parameters()).dtype

    def encode_regions(
        self, features: ImageFeatures, index: int, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask and pos tokens (N, hidden) for the masks (N, H, W) of image ``index`` in ``features``."""
        levels = {name: feats[index] for name, feats in features.levels.items()}
        return self.mask_extractor(levels, masks.to(self.device))

    # ---- splicing ------------------------------------------------------------------------------------
    def splice(
        self,
        input_ids: torch.Tensor,
        image_tokens: torch.Tensor | None,
        mask_tokens: torch.Tensor,
        pos_tokens: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embed one sequence (L,) and put the visual tokens in place.

        The image tokens replace the single ``IMAGE_TOKEN_INDEX``; the i-th ``<mask>`` embedding becomes
        the i-th mask token and the token right after it (``<pos>``) the i-th pos token. Labels at all
        visual positions become ``IGNORE_INDEX``.
        """
        mask_id, pos_id = self.region_token_ids
        mask_positions = torch.eq(input_ids, mask_id).nonzero().flatten()
        if len(mask_positions) != len(mask_tokens):
            raise ValueError(f"the prompt has {len(mask_positions)} <mask> tokens but {len(mask_tokens)} masks")
        pos_positions = mask_positions + 1
        if len(pos_positions) and (pos_positions[-1] >= len(input_ids) or (input_ids[pos_positions] != pos_id).any()):
            raise ValueError("every <mask> must be followed by <pos>")
        visual = (input_ids < 0) | (input_ids == mask_id) | (input_ids == pos_id)
        embed = self.language_model.get_input_embeddings()
        embeds = embed(input_ids.masked_fill(visual, 0))
        if len(mask_positions):
            embeds = embeds.index_put((mask_positions,), mask_tokens.to(embeds.dtype))
            embeds = embeds.index_put((pos_positions,), pos_tokens.to(embeds.dtype))
        if labels is not None:
            labels = labels.masked_fill(visual, IGNORE_INDEX)

        image_positions = (input_ids == IMAGE_TOKEN_INDEX).nonzero().flatten()
        if image_tokens is None:
            if len(image_positions):
                raise ValueError("the prompt has an <image> placeholder but no image was given")
            return embeds, labels
        if len(image_positions) != 1:
            raise ValueError(f"the prompt needs exactly one <image>, it has {len(image_positions)}")
        p = int(image_positions[0])
        embeds = torch.cat([embeds[:p], image_tokens.to(embeds.dtype), embeds[p + 1 :]])
        if labels is not None:
            ignored = labels.new_full((len(image_tokens),), IGNORE_INDEX)
            labels = torch.cat([labels[:p], ignored, labels[p + 1 :]])
        return embeds, labels

    def prepare_inputs(
        self,
        input_ids: list[torch.Tensor],
        pixel_values: torch.Tensor,
        masks: list[torch.Tensor],
        labels: list[torch.Tensor] | None = None,
        vision_levels: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A batch of prompts (one image and its masks each) → right-padded embeds, attention mask, labels."""
        features = self.encode_images(pixel_values, vision_levels)
        rows, row_labels = [], []
        for i, ids in enumerate(input_ids):
            mask_tokens, pos_tokens = self.encode_regions(features, i, masks[i])
            embeds, lab = self.splice(
                ids.to(self.device),
                features.image_tokens[i],
                mask_tokens,
                pos_tokens,
                None if labels is None else labels[i].to(self.device),
            )
            rows.append(embeds)
            row_labels.append(lab)
        length = max(len(row) for row in rows)
        hidden = rows[0].shape[-1]
        padded = rows[0].new_zeros((len(rows), length, hidden))
        attention = torch.zeros((len(rows), length), dtype=torch.long, device=self.device)
        padded_labels = None if labels is None else torch.full_like(attention, IGNORE_INDEX)
        for i, (row, row_label) in enumerate(zip(rows, row_labels, strict=True)):
            padded[i, : len(row)] = row
            attention[i, : len(row)] = 1
            if padded_labels is not None and row_label is not None:
                padded_labels[i, : len(row)] = row_label
        return padded, attention, padded_labels

    def forward(
        self,
        input_ids: list[torch.Tensor],
        pixel_values: torch.Tensor,
        masks: list[torch.Tensor],
        labels: list[torch.Tensor] | None = None,
        vision_levels: dict[str, torch.Tensor] | None = None,
    ) -> CausalLMOutputWithPast:
        embeds, attention, padded_labels = self.prepare_inputs(input_ids, pixel_values, masks, labels, vision_levels)
        return self.language_model(inputs_embeds=embeds, attention_mask=attention, labels=padded_labels)

    # ---- checkpoints ---------------------------------------------------------------------------------
    def released_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights under the released names (the vision tower is not part of an Osprey checkpoint)."""
        out = {}
        for name, tensor in self.state_dict().items():
            key = released_name(name)
            if key is not None:
                out[key] = tensor
        return out

    def save_pretrained(self, model_dir: str | Path, *, safe_serialization: bool = True, **kwargs) -> None:
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.config.save(model_dir / "config.json")
        checkpoint_io.save_sharded(
            self.released_state_dict(), model_dir, safe_serialization=safe_serialization, **kwargs
        )

    def load_released_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load released-name weights; every key must be used or documented as ignored, none may be missing."""
        own: dict[str, torch.Tensor] = {}
        ignored = []
        for key, tensor in state.items():
            name = own_name(key)
            if name is None:
                ignored.append(key)
            else:
                own[name] = tensor
        result = self.load_state_dict(own, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("vision_tower.")]
        if missing or result.unexpected_keys:
            raise checkpoint_io.CheckpointError(
                "checkpoint does not match the model: "
                f"missing {checkpoint_io.describe_keys(missing) or 'none'}; "
                f"unexpected {checkpoint_io.describe_keys(result.unexpected_keys) or 'none'}"
            )
        vision_copies = sum(k.startswith(_IGNORED_RELEASED_PREFIXES) for k in ignored)
        logger.info(
            "loaded %d Osprey weights; ignored %d (%d vision-tower copies, taken from the open_clip file "
            "instead; %d rotary caches)",
            len(own),
            len(ignored),
            vision_copies,
            len(ignored) - vision_copies,
        )

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        clip_path: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> OspreyForCausalLM:
        """Load a released-layout directory and the open_clip vision weights (nothing is downloaded)."""
        model_dir = Path(model_dir)
        config_path = model_dir / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{config_path} not found: point --model at a folder holding an Osprey checkpoint "
                "(config.json and pytorch_model-*.bin or *.safetensors, e.g. sunshine-lwt/Osprey-7b)"
            )
        config = OspreyConfig.from_json_file(config_path)
        clip_path = resolve_clip_path(model_dir, config, clip_path)
        with torch.device("meta"):  # no random init of weights that are about to be overwritten
            model = cls(config)
        model.to_empty(device="cpu")
        keep_rotary_in_float32(model.language_model, model.language_model.config)  # a computed buffer
        missing = model.vision_tower.load_open_clip_file(clip_path)
        missing_trunk = [key for key in missing if key.startswith("trunk.")]
        if missing_trunk:
            raise checkpoint_io.CheckpointError(
                f"{clip_path} lacks vision trunk weights: {checkpoint_io.describe_keys(missing_trunk)}"
            )
        model.load_released_state_dict(checkpoint_io.load_state_dict(model_dir))
        return model.to(device=device, dtype=dtype).eval()


def resolve_clip_path(model_dir: Path, config: OspreyConfig, clip_path: str | Path | None) -> Path:
    """The explicit path, else config's ``mm_vision_tower`` (relative to the model folder if relative)."""
    if clip_path is not None:
        path = Path(clip_path)
    else:
        configured = Path(config.mm_vision_tower)
        path = configured if configured.is_absolute() else model_dir / configured
        if not path.is_file() and (model_dir / configured.name).is_file():
            path = model_dir / configured.name
    if not path.is_file():
        raise FileNotFoundError(
            f"CLIP vision weights not found at {path}. Download open_clip_pytorch_model.bin of "
            "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup and pass its path as --clip "
            "(clip_path), or put it in the model folder."
        )
    return path
