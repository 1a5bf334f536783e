"""A plain training loop for any stage: CPU for tests and small runs, DeepSpeed ZeRO-2 on GPUs.

AdamW, cosine schedule with linear warmup (3% by default), gradient clipping, optional gradient
checkpointing, resume from the last checkpoint, a tqdm progress bar and a CSV metrics log. Checkpoints
are written in the released layout (``save_pretrained``), so any stage's output loads with
``from_pretrained`` and the next stage starts from it.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from osprey_model import OspreyForCausalLM

from .data.dataset import RegionDataset, collate
from .stages import apply_stage, get_stage, merge_lora

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
METRICS_FILE = "metrics.csv"


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


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    def __init__(self, model: OspreyForCausalLM, dataset: RegionDataset, config: TrainConfig, tokenizer=None) -> None:
        self.model, self.dataset, self.config, self.tokenizer = model, dataset, config, tokenizer
        self.stage = get_stage(config.stage)
        if config.lora_rank and config.save_every:
            raise ValueError(
                "intermediate checkpoints (save_every) are not supported with LoRA; merge happens at the end"
            )
        self.output_dir = Path(config.output_dir)
        torch.manual_seed(config.seed)
        self.params = apply_stage(model, self.stage, config.lora_rank)
        if config.gradient_checkpointing:
            model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            shuffle=True,
            collate_fn=collate,
            num_workers=config.num_workers,
            generator=torch.Generator().manual_seed(config.seed),
        )
        per_epoch = math.ceil(len(self.loader) / config.grad_accum)
        self.total_steps = config.max_steps or max(1, math.ceil(per_epoch * config.epochs))
        self.warmup = max(1, round(config.warmup_ratio * self.total_steps))
        lr = config.learning_rate or self.stage.learning_rate
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: cosine_with_warmup(step, self.total_steps, self.warmup)
        )
        self.engine = self._deepspeed() if config.deepspeed_config else None
        self.step = 0
        self.vision_cache: dict[str, dict[str, torch.Tensor]] = {}

    def _deepspeed(self):
        """ZeRO-2 engine on GPUs (bf16); the micro-batch, accumulation and clipping come from our config."""
        import deepspeed

        ds_config = json.loads(Path(self.config.deepspeed_config).read_text())
        ds_config.update(
            train_micro_batch_size_per_gpu=self.config.batch_size,
            gradient_accumulation_steps=self.config.grad_accum,
            gradient_clipping=self.config.max_grad_norm,
        )
        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=self.model, model_parameters=self.params, optimizer=self.optimizer,
            lr_scheduler=self.scheduler, config=ds_config,
        )  # fmt: skip
        self.optimizer, self.scheduler = optimizer, scheduler
        return engine

    # ---- checkpoints ----------------------------------------------------------------------------------
    def save(self, final: bool = False) -> Path:
        """The model in the released layout (the final one in ``output_dir``), plus what a resume needs."""
        if final:
            merge_lora(self.model)
            target = self.output_dir
        else:
            target = self.output_dir / "checkpoint-last.tmp"
            shutil.rmtree(target, ignore_errors=True)
        self.model.save_pretrained(target)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(target)
        (target / "train_config.json").write_text(json.dumps(asdict(self.config), indent=2))
        if final:
            return target
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        torch.save(state, target / STATE_FILE)
        last = self.output_dir / "checkpoint-last"
        shutil.rmtree(last, ignore_errors=True)
        target.rename(last)  # a crash mid-save never leaves a half-written checkpoint-last
        return last

    def try_resume(self) -> bool:
        checkpoint = self.output_dir / "checkpoint-last"
        if not (checkpoint / STATE_FILE).is_file():
            return False
        from osprey_model.checkpoint_io import load_state_dict

        self.model.load_released_state_dict(load_state_dict(checkpoint))
        state = torch.load(checkpoint / STATE_FILE, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        logger.info("resumed stage %d from %s at step %d", self.config.stage, checkpoint, self.step)
        return True

    # ---- the loop -------------------------------------------------------------------------------------
    def _levels(self, batch: dict) -> dict[str, torch.Tensor] | None:
        if not self.config.cache_vision_features:
            return None
        missing = [i for i, sample_id in enumerate(batch["ids"]) if sample_id not in self.vision_cache]
        if missing:
            with torch.no_grad():
                computed = self.model.vision_tower(batch["pixel_values"][missing].to(self.model.device))
            for row, i in enumerate(missing):
                self.vision_cache[batch["ids"][i]] = {name: feats[row] for name, feats in computed.items()}
        cached = [self.vision_cache[sample_id] for sample_id in batch["ids"]]
        return {name: torch.stack([c[name] for c in cached]) for name in cached[0]}

    def loss(self, batch: dict) -> torch.Tensor:
        model = self.engine or self.model
        return model(
            batch["input_ids"],
            batch["pixel_values"],
            batch["masks"],
            batch["labels"],
            vision_levels=self._levels(batch),
        ).loss

    def train(self) -> Path:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.try_resume()
        self.model.train()
        self.model.vision_tower.eval()
        metrics_path = self.output_dir / METRICS_FILE
        new_log = not metrics_path.exists()
        with metrics_path.open("a", newline="") as f:
            log = csv.writer(f)
            if new_log:
                log.writerow(["stage", "step", "loss", "learning_rate", "seconds"])
            bar = tqdm(total=self.total_steps, initial=self.step, desc=f"stage {self.config.stage}", unit="step")
            start = time.monotonic()
            while self.step < self.total_steps:
                for batch_index, batch in enumerate(self.loader):
                    if batch is None:
                        continue
                    loss = self.loss(batch) / self.config.grad_accum
                    if self.engine is not None:
                        self.engine.backward(loss)
                        self.engine.step()
                    else:
                        loss.backward()
                    if (batch_index + 1) % self.config.grad_accum:
                        continue
                    if self.engine is None:
                        torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
                        self.optimizer.step()
                        self.scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    value = loss.item() * self.config.grad_accum
                    lr = self.scheduler.get_last_lr()[0]
                    log.writerow(
                        [self.config.stage, self.step, f"{value:.4f}", f"{lr:.3e}", f"{time.monotonic() - start:.1f}"]
                    )
                    bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.1e}")
                    bar.update()
                    if self.config.save_every and self.step % self.config.save_every == 0:
                        f.flush()
                        self.save()
                    if self.step >= self.total_steps:
                        break
            bar.close()
        return self.save(final=True)
