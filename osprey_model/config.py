"""Osprey configuration and named presets.

The released checkpoints store a transformers-4.31 LLaMA ``config.json`` with a few ``mm_*`` keys. Fields
that the released file does not carry (the vision trunk, the extractor widths) default to the released
model's values, so a released ``config.json`` loads as is; the ``tiny`` preset writes them explicitly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from transformers import LlamaConfig

ConfigT = TypeVar("ConfigT")

MODEL_TYPE = "osprey"
ARCHITECTURES = ["OspreyLlamaForCausalLM"]
FEATURE_LEVELS = ("res2", "res3", "res4", "res5")

# LLaMA fields copied between our configs (Osprey's, LISA's) and the released config.json files.
LLM_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "tie_word_embeddings",
)


@dataclass
class VisionConfig:
    """The open_clip ConvNeXt trunk whose stage outputs are res2..res5."""

    timm_model_name: str = "convnext_large"
    open_clip_model: str = "convnext_large_d_320"
    clip_embed_dim: int = 768
    image_size: int = 512
    image_token_level: str = "res4"


@dataclass
class MaskExtractorConfig:
    """Widths of the mask-aware visual extractor (released: 1024 wide, 112x112 spatial mask)."""

    embed_dim: int = 1024
    mask_shape: int = 112


@dataclass
class OspreyConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    mask_extractor: MaskExtractorConfig = field(default_factory=MaskExtractorConfig)
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    tie_word_embeddings: bool = False
    mm_projector_type: str = "mlp2x_gelu"
    mm_vision_tower: str = "open_clip_pytorch_model.bin"
    max_length: int = 2048

    def llama_config(self) -> LlamaConfig:
        return LlamaConfig(**{key: getattr(self, key) for key in LLM_KEYS}, attn_implementation="sdpa")

    def to_dict(self) -> dict[str, Any]:
        """The released config.json layout, plus namespaced ``osprey_*`` keys for the non-LLM widths."""
        out: dict[str, Any] = {"architectures": ARCHITECTURES, "model_type": MODEL_TYPE}
        out.update({key: getattr(self, key) for key in LLM_KEYS})
        out.update(
            hidden_act="silu",
            mm_projector_type=self.mm_projector_type,
            mm_vision_tower=self.mm_vision_tower,
            max_length=self.max_length,
            osprey_vision=dataclasses.asdict(self.vision),
            osprey_mask_extractor=dataclasses.asdict(self.mask_extractor),
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OspreyConfig:
        if data.get("model_type") != MODEL_TYPE:
            raise ValueError(f"config.json has model_type {data.get('model_type')!r}, expected {MODEL_TYPE!r}")
        if data.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
            raise ValueError(f"unsupported mm_projector_type {data['mm_projector_type']!r}")
        known = {f.name for f in dataclasses.fields(cls)} - {"vision", "mask_extractor"}
        kwargs = {key: value for key, value in data.items() if key in known and value is not None}
        kwargs.setdefault("num_key_value_heads", kwargs.get("num_attention_heads", cls.num_attention_heads))
        vision = VisionConfig(**data.get("osprey_vision", {}))
        extractor = MaskExtractorConfig(**data.get("osprey_mask_extractor", {}))
        return cls(vision=vision, mask_extractor=extractor, **kwargs)

    @classmethod
    def from_json_file(cls, path: str | Path) -> OspreyConfig:
        return read_config_json(path, "Osprey", cls.from_dict)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def read_config_json(path: str | Path, model: str, parse: Callable[[dict[str, Any]], ConfigT]) -> ConfigT:
    """Errors name the file: a broken config.json is a common result of a partial download."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        return parse(data)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path}: not a valid {model} config.json: {exc}") from exc


def _osprey_7b() -> OspreyConfig:
    """The released Osprey-7b: ConvNeXt-L CLIP at 512px, Vicuna-7B v1.5."""
    return OspreyConfig()


def _tiny() -> OspreyConfig:
    """Same code paths at toy widths, for tests and CPU demos."""
    return OspreyConfig(
        vision=VisionConfig(
            timm_model_name="convnext_zepto_rms", open_clip_model="", clip_embed_dim=64, image_size=128
        ),
        mask_extractor=MaskExtractorConfig(embed_dim=64, mask_shape=28),
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        max_length=1024,
    )


PRESETS = {"osprey-7b": _osprey_7b, "tiny": _tiny}


def get_preset(name: str) -> OspreyConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
