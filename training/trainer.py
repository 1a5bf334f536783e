"""Osprey's trainer for any stage: CPU for tests and small runs, DeepSpeed ZeRO-2 on GPUs.

AdamW, cosine schedule with linear warmup (3% by default), gradient clipping, optional gradient
checkpointing, resume from the last checkpoint (mid-epoch, where the stopped run was), a tqdm progress bar
and a CSV metrics log (the shared ``TrainingLoop``). Checkpoints are written in the released layout
(``save_pretrained``), so any stage's output loads with ``from_pretrained`` and the next stage starts from it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from osprey_model import OspreyForCausalLM

from .data.dataset import RegionDataset, collate
from .loop import METRICS_FILE, STATE_FILE, TrainingLoop, cosine_with_warmup
from .stages import apply_stage, get_stage, merge_lora
from .streams import ResumableRandomSampler

__all__ = ["METRICS_FILE", "STATE_FILE", "TrainConfig", "Trainer", "cosine_with_warmup"]

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    stage: int
    output_dir: str
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 0.0  # 0 = the stage's reference learning rate
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    lora_rank: int = 0
    cache_vision_features: bool = False  # the tower is frozen: compute its outputs once per image
    save_every: int = 0  # steps; 0 = only at the end
    seed: int = 0
    num_workers: int = 0
    deepspeed_config: str = ""


class Trainer(TrainingLoop):
    def __init__(self, model: OspreyForCausalLM, dataset: RegionDataset, config: TrainConfig, tokenizer=None) -> None:
        self.dataset, self.config, self.tokenizer = dataset, config, tokenizer
        self.stage = get_stage(config.stage)
        if config.lora_rank and config.save_every:
            raise ValueError(
                "intermediate checkpoints (save_every) are not supported with LoRA; merge happens at the end"
            )
        torch.manual_seed(config.seed)
        params = apply_stage(model, self.stage, config.lora_rank)
        if config.gradient_checkpointing:
            model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        generator = torch.Generator().manual_seed(config.seed)
        self.sampler = ResumableRandomSampler(dataset, generator)  # the order of shuffle=True, resumable
        self.loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=self.sampler,
            collate_fn=collate,
            num_workers=config.num_workers,
            generator=generator,
        )
        per_epoch = math.ceil(len(self.loader) / config.grad_accum)
        total_steps = config.max_steps or max(1, math.ceil(per_epoch * config.epochs))
        super().__init__(
            model,
            params,
            config.output_dir,
            name=f"stage {config.stage}",
            metrics_prefix={"stage": config.stage},
            total_steps=total_steps,
            learning_rate=config.learning_rate or self.stage.learning_rate,
            warmup_steps=round(config.warmup_ratio * total_steps),
            weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm,
            grad_accum=config.grad_accum,
            save_every=config.save_every,
            micro_batch_size=config.batch_size,
            deepspeed_config=config.deepspeed_config,
        )
        self.osprey: OspreyForCausalLM = model  # self.model, typed
        self.vision_cache: dict[str, dict[str, torch.Tensor]] = {}

    # ---- checkpoints ----------------------------------------------------------------------------------
    def save_model(self, target: Path, final: bool) -> None:
        """The released layout (LoRA merged into the final one)."""
        if final:
            merge_lora(self.osprey)
        self.osprey.save_pretrained(target)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(target)
        (target / "train_config.json").write_text(json.dumps(asdict(self.config), indent=2))

    def load_model(self, checkpoint: Path) -> None:
        from osprey_model.checkpoint_io import load_state_dict

        self.osprey.load_released_state_dict(load_state_dict(checkpoint))

    # ---- the loop -------------------------------------------------------------------------------------
    def _levels(self, batch: dict) -> dict[str, torch.Tensor] | None:
        if not self.config.cache_vision_features:
            return None
        missing = [i for i, sample_id in enumerate(batch["ids"]) if sample_id not in self.vision_cache]
        if missing:
            with torch.no_grad():
                computed = self.osprey.vision_tower(batch["pixel_values"][missing].to(self.osprey.device))
            for row, i in enumerate(missing):
                self.vision_cache[batch["ids"][i]] = {name: feats[row] for name, feats in computed.items()}
        cached = [self.vision_cache[sample_id] for sample_id in batch["ids"]]
        return {name: torch.stack([c[name] for c in cached]) for name in cached[0]}

    def loss(self, batch: dict) -> torch.Tensor:
        model = self.engine or self.osprey
        return model(
            batch["input_ids"],
            batch["pixel_values"],
            batch["masks"],
            batch["labels"],
            vision_levels=self._levels(batch),
        ).loss

    def batches(self) -> Iterator[dict]:
        self.sampler.start_epoch()
        for batch in self.loader:  # None: every record of the batch was skipped (the loop passes over it)
            self.sampler.taken = min(self.sampler.taken + self.config.batch_size, len(self.sampler))
            yield batch

    def data_state(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(batch), {}

    def train(self) -> Path:
        self.osprey.train()
        self.osprey.vision_tower.eval()
        return super().train()
