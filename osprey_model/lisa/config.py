"""LISA configuration: the released ``config.json`` (a transformers-4.31 LLaVA/LLaMA config) and presets.

The released file names the CLIP tower by hub id (``openai/clip-vit-large-patch14``) and says nothing of
SAM, whose ViT-H lives inside the checkpoint. Fields it does not carry default to the released model's
values; the ``tiny`` preset writes them under ``lisa_*`` keys.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import LlamaConfig

from ..config import LLM_KEYS, read_config_json

MODEL_TYPE = "llava"
ARCHITECTURES = ["LISAForCausalLM"]
CLIP_HUB_ID = "openai/clip-vit-large-patch14"


@dataclass
class LisaConfig:
    # The LLaMA decoder (LISA-7B-v1: LLaVA-Lightning-7B-v1-1, vocabulary 32000 + 4 added tokens).
    vocab_size: int = 32004
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    tie_word_embeddings: bool = False
    # LLaVA v1's vision side: CLIP ViT-L/14 at 224 px, the second-to-last layer, CLS dropped, one Linear.
    mm_vision_tower: str = CLIP_HUB_ID
    mm_hidden_size: int = 1024
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = "patch"
    mm_use_im_start_end: bool = True
    # LISA: [SEG]'s hidden state → text_hidden_fcs → a 256-d prompt for SAM's mask decoder.
    out_dim: int = 256
    sam_preset: str = "vit_h"  # not in the released file: its visual_model is SAM ViT-H
    # Not in the released file either: the released template puts the image before the question. The tiny
    # shapes model reads the question first, since an LLM trained from nothing does not learn the image-first
    # lookup on a CPU (training/README.md, LISA); a documented departure that only it takes.
    question_first: bool = False

    def llama_config(self) -> LlamaConfig:
        return LlamaConfig(**{key: getattr(self, key) for key in LLM_KEYS}, attn_implementation="sdpa")

    def to_dict(self) -> dict[str, Any]:
        """The released config.json layout (plus ``lisa_sam_preset``, and ``lisa_question_first`` if set)."""
        out: dict[str, Any] = {"architectures": ARCHITECTURES, "model_type": MODEL_TYPE}
        out.update({key: getattr(self, key) for key in LLM_KEYS})
        out.update(
            hidden_act="silu",
            mm_vision_tower=self.mm_vision_tower,
            vision_tower=self.mm_vision_tower,
            mm_hidden_size=self.mm_hidden_size,
            mm_vision_select_layer=self.mm_vision_select_layer,
            mm_vision_select_feature=self.mm_vision_select_feature,
            mm_use_im_start_end=self.mm_use_im_start_end,
            mm_use_im_patch_token=False,
            out_dim=self.out_dim,
            train_mask_decoder=True,
            use_mm_proj=True,
            use_cache=False,
            lisa_sam_preset=self.sam_preset,
        )
        if self.question_first:
            out["lisa_question_first"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LisaConfig:
        if data.get("model_type") != MODEL_TYPE or not any("LISA" in a for a in data.get("architectures") or []):
            raise ValueError(
                f"not a LISA config: model_type {data.get('model_type')!r}, architectures "
                f"{data.get('architectures')!r} (expected {MODEL_TYPE!r} and LISAForCausalLM)"
            )
        if data.get("mm_vision_select_feature", "patch") != "patch":
            raise ValueError(f"unsupported mm_vision_select_feature {data['mm_vision_select_feature']!r}")
        if data.get("mm_use_im_start_end") is False:
            raise ValueError("mm_use_im_start_end false: LISA always wraps the image in <im_start>/<im_end>")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {key: value for key, value in data.items() if key in known and value is not None}
        kwargs.setdefault("mm_vision_tower", data.get("vision_tower") or CLIP_HUB_ID)
        kwargs.setdefault("num_key_value_heads", kwargs.get("num_attention_heads", cls.num_attention_heads))
        if "lisa_sam_preset" in data:
            kwargs["sam_preset"] = data["lisa_sam_preset"]
        kwargs["question_first"] = bool(data.get("lisa_question_first", False))
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | Path) -> LisaConfig:
        return read_config_json(path, "LISA", cls.from_dict)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def _lisa_7b() -> LisaConfig:
    return LisaConfig()


def _lisa_13b_llama2() -> LisaConfig:
    """LISA-Llama2-13B: LLaVA llama-2-13b-chat; [SEG] 32000, <im_start> 32001, <im_end> 32002."""
    return LisaConfig(
        vocab_size=32003,
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=40,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    )


def _tiny() -> LisaConfig:
    """Same code paths at toy widths, for tests: the 7B-v1 vocabulary and token ids, a 2-layer LLaMA, the
    tiny SAM preset (the CLIP tower's size comes from its own folder)."""
    return LisaConfig(
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        mm_hidden_size=32,
        sam_preset="tiny",
    )


PRESETS = {"lisa-7b": _lisa_7b, "lisa-13b-llama2": _lisa_13b_llama2, "tiny": _tiny}


def get_lisa_preset(name: str) -> LisaConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown LISA preset {name!r}; choose one of {sorted(PRESETS)}") from None
