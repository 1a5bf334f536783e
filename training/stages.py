"""Osprey's three training stages: what each one trains (the vision tower is frozen in all of them)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from osprey_model import OspreyForCausalLM


@dataclass(frozen=True)
class Stage:
    number: int
    name: str
    trains: tuple[str, ...]  # top-level modules of OspreyForCausalLM
    learning_rate: float  # the reference recipe's
    epochs: float
    data: str


STAGES = {
    1: Stage(1, "image-text alignment", ("projector",), 1e-3, 1, "image-caption pairs (LLaVA-style)"),
    2: Stage(2, "mask-text alignment", ("mask_extractor",), 2e-5, 2, "region texts (COCO instances, RefCOCO)"),
    3: Stage(3, "end-to-end fine-tuning", ("language_model", "projector", "mask_extractor"), 1e-5, 2, "Osprey-724K"),
}


def get_stage(number: int) -> Stage:
    if number not in STAGES:
        raise ValueError(f"stage must be one of {sorted(STAGES)}, got {number}")
    return STAGES[number]


def apply_stage(model: OspreyForCausalLM, stage: Stage, lora_rank: int = 0) -> list[nn.Parameter]:
    """Freeze everything, unfreeze what ``stage`` trains, return the trainable parameters.

    With ``lora_rank`` > 0 in stage 3 the LLM gets LoRA adapters on q/v (peft) and only those train.
    """
    model.requires_grad_(False)
    for name in stage.trains:
        if name == "language_model" and lora_rank:
            add_lora(model, lora_rank)
        else:
            getattr(model, name).requires_grad_(True)
    model.vision_tower.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def add_lora(model: OspreyForCausalLM, rank: int) -> None:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05, target_modules=["q_proj", "v_proj"])
    model.language_model = get_peft_model(model.language_model, config)  # type: ignore[assignment]  # merge_lora unwraps


def merge_lora(model: OspreyForCausalLM) -> None:
    """Fold LoRA adapters into the LLM weights so the checkpoint has the released layout."""
    merge = getattr(model.language_model, "merge_and_unload", None)
    if merge is not None:
        model.language_model = merge()
