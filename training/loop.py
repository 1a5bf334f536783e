"""The training loop every model here shares: optimizer and schedule, DeepSpeed ZeRO-2 when configured,
gradient accumulation and clipping, resume from ``checkpoint-last``, a tqdm bar and ``metrics.csv``.

A model's trainer subclasses ``TrainingLoop`` and says only what differs: its batches, its loss (with any
extra figures to log) and how its weights are saved and restored. A trainer whose batches come from a seeded
stream also says where the stream is (``data_state``), so that a resumed run reads on from there, and with
torch's generator restored too, a run stopped and resumed ends at the weights of one that never stopped.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from . import ranks

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
DATA_STATE_FILE = "data_state.json"
METRICS_FILE = "metrics.csv"
LAST_CHECKPOINT = "checkpoint-last"
DEEPSPEED_FOLDER = "deepspeed"  # in a checkpoint: the engine's own (weights, each rank's optimizer partition)


def rank_file(name: str, rank: int) -> str:
    """A rank's own file in a checkpoint: rank 0 keeps the plain name, which one process has always written."""
    if rank == 0:
        return name
    stem, dot, suffix = name.partition(".")
    return f"{stem}.rank{rank}{dot}{suffix}"


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_decay(step: int, total: int, warmup: int) -> float:
    """DeepSpeed's WarmupDecayLR: 0 → 1 linearly over ``warmup`` steps, then linearly to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


SCHEDULES: dict[str, Callable[[int, int, int], float]] = {"cosine": cosine_with_warmup, "warmup_decay": warmup_decay}


class TrainingLoop:
    """Subclasses implement ``batches``, ``compute_loss``, ``save_model`` and ``load_model``."""

    def __init__(
        self,
        model: nn.Module,
        params: list[nn.Parameter],
        output_dir: str | Path,
        *,
        name: str = "train",
        metrics_prefix: dict[str, Any] | None = None,
        total_steps: int,
        learning_rate: float,
        warmup_steps: int,
        schedule: str = "cosine",
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
        grad_accum: int = 1,
        save_every: int = 0,
        micro_batch_size: int = 1,
        deepspeed_config: str = "",
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}")
        if ranks.world_size() > 1 and not deepspeed_config:
            raise ValueError(
                f"{ranks.world_size()} processes without DeepSpeed would each train a copy of the model on its own "
                "share of the data: pass a DeepSpeed config (--deepspeed), or run one process"
            )
        self.model, self.params = model, params
        self.name = name  # the progress bar's label
        self.metrics_prefix = metrics_prefix or {}  # constant leading columns of metrics.csv (e.g. the stage)
        self.output_dir = Path(output_dir)
        self.total_steps, self.warmup = total_steps, max(1, warmup_steps)
        self.max_grad_norm, self.grad_accum, self.save_every = max_grad_norm, grad_accum, save_every
        self.optimizer = torch.optim.AdamW(params, lr=learning_rate, betas=betas, weight_decay=weight_decay)
        factor = SCHEDULES[schedule]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: factor(step, self.total_steps, self.warmup)
        )
        self.engine = self._deepspeed(deepspeed_config, micro_batch_size) if deepspeed_config else None
        self.step = 0

    def _deepspeed(self, config_path: str, micro_batch_size: int):
        """ZeRO-2 engine on GPUs (bf16); the micro-batch, accumulation and clipping come from our settings."""
        import deepspeed

        ds_config = json.loads(Path(config_path).read_text())
        ds_config.update(
            train_micro_batch_size_per_gpu=micro_batch_size,
            gradient_accumulation_steps=self.grad_accum,
            gradient_clipping=self.max_grad_norm,
        )
        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=self.model, model_parameters=self.params, optimizer=self.optimizer,
            lr_scheduler=self.scheduler, config=ds_config,
        )  # fmt: skip
        self.optimizer, self.scheduler = optimizer, scheduler
        return engine

    # ---- what a model's trainer says ----------------------------------------------------------------
    def batches(self) -> Iterator[Any]:
        """Batches, endlessly or for one epoch (the loop starts another one when it ends)."""
        raise NotImplementedError

    def compute_loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise and extra figures for metrics.csv (the same names every step)."""
        raise NotImplementedError

    def save_model(self, target: Path, final: bool) -> None:
        raise NotImplementedError

    def load_model(self, checkpoint: Path) -> None:
        raise NotImplementedError

    def data_state(self) -> dict[str, Any] | None:
        """Where the batches' stream is now (JSON-able), for a resume to read on from there; None (the
        default) when the trainer cannot say, and a resumed run starts its data over."""
        return None

    def load_data_state(self, state: dict[str, Any]) -> None:
        """Put the stream back where ``data_state`` said it was."""
        raise NotImplementedError

    # ---- checkpoints --------------------------------------------------------------------------------
    def save(self, final: bool = False) -> Path:
        """The model (the final one in ``output_dir``), plus what a resume needs in ``checkpoint-last``.

        The first rank writes the model; every rank writes its own generators and place in the data, and under
        DeepSpeed the engine writes each rank's optimizer partition (with the fp32 master weights that a resume
        must restore, not only the module's)."""
        main, rank = ranks.is_main(), ranks.rank()
        if final:
            if main:
                self.save_model(self.output_dir, final=True)
            ranks.barrier()
            return self.output_dir
        target = self.output_dir / f"{LAST_CHECKPOINT}.tmp"
        if main:
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            if self.engine is None:  # DeepSpeed's checkpoint holds the weights (a second copy of a 7B is 13 GB)
                self.save_model(target, final=False)
        ranks.barrier()
        state: dict[str, Any] = {
            "step": self.step,
            "world_size": ranks.world_size(),
            "deepspeed": self.engine is not None,
            "torch_rng": torch.get_rng_state(),  # dropout (LoRA's) draws from it
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()  # and from this one on GPUs
        if self.engine is not None:
            self.engine.save_checkpoint(str(target / DEEPSPEED_FOLDER), tag="last", client_state={"step": self.step})
        else:
            state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict())
        torch.save(state, target / rank_file(STATE_FILE, rank))
        data_state = self.data_state()
        if data_state is not None:
            (target / rank_file(DATA_STATE_FILE, rank)).write_text(json.dumps(data_state))
        ranks.barrier()
        last = self.output_dir / LAST_CHECKPOINT
        if main:
            shutil.rmtree(last, ignore_errors=True)
            target.rename(last)  # a crash mid-save never leaves a half-written checkpoint-last
        ranks.barrier()
        return last

    def try_resume(self) -> bool:
        """Continue from ``checkpoint-last``; a longer run may extend it (the schedule follows the new length)."""
        checkpoint = self.output_dir / LAST_CHECKPOINT
        if not (checkpoint / STATE_FILE).is_file():
            return False
        rank, world = ranks.rank(), ranks.world_size()
        first = torch.load(checkpoint / STATE_FILE, weights_only=True)
        # Every rank decides alike (a rank that raised alone would leave the others waiting in a collective);
        # the ranks share the output folder's filesystem.
        saved_by = first.get("world_size", 1)
        if saved_by != world:  # each rank's place in the data (and its ZeRO partition) is its own
            raise ValueError(
                f"{checkpoint} was written by {saved_by} process(es), and this run has {world}: "
                "resume with as many, or use another output directory"
            )
        missing = [r for r in range(world) if not (checkpoint / rank_file(STATE_FILE, r)).is_file()]
        if missing:
            raise ValueError(f"{checkpoint} lacks the state of rank(s) {missing}: it is not a whole checkpoint")
        if first.get("deepspeed", False) != (self.engine is not None):
            written, run = ("with", "without") if first.get("deepspeed", False) else ("without", "with")
            raise ValueError(
                f"{checkpoint} was written {written} DeepSpeed and this run is {run} it: their optimizer states "
                "differ; resume as the run was started, or use another output directory"
            )
        state = first if rank == 0 else torch.load(checkpoint / rank_file(STATE_FILE, rank), weights_only=True)
        step = int(state["step"])
        if step > self.total_steps:
            # Resuming would train nothing and save a longer run's weights as this one's.
            raise ValueError(
                f"{checkpoint} is at step {step}, past this run's {self.total_steps} steps: "
                "use another output directory, or delete that checkpoint to start over"
            )
        if self.engine is not None:
            loaded, _ = self.engine.load_checkpoint(str(checkpoint / DEEPSPEED_FOLDER), tag="last")
            if loaded is None:
                raise ValueError(f"DeepSpeed found no checkpoint in {checkpoint / DEEPSPEED_FOLDER}")
        else:
            self.load_model(checkpoint)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        data_file = checkpoint / rank_file(DATA_STATE_FILE, rank)
        if data_file.is_file():
            self.load_data_state(json.loads(data_file.read_text()))
        else:
            logger.warning("%s holds no data state: %s reads its data from the start again", checkpoint, self.name)
        # Last: restoring the data may run model code (a pool's tower features), which must not draw from these.
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available() and len(state["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = step
        logger.info("resumed %s from %s at step %d", self.name, checkpoint, self.step)
        return True

    def _keep_logged_steps(self, metrics_path: Path) -> tuple[bool, float]:
        """Trim ``metrics.csv`` to the steps the model now holds; say whether it still has its header, and
        how many seconds of training its last kept step had taken (the ``seconds`` column goes on from there,
        so that a resumed run's last row gives the whole run's training time).

        A run stopped after its last checkpoint logged steps that the resumed run trains and logs again, and
        one stopped before its first step left a file with no header; a fresh start keeps nothing."""
        if self.step == 0 or not metrics_path.is_file():
            return False, 0.0
        with metrics_path.open(newline="") as f:
            rows = list(csv.reader(f))
        if not rows or "step" not in rows[0]:
            logger.warning("%s has no header; the resumed run appends to it as it is", metrics_path)
            return bool(rows), 0.0
        column = rows[0].index("step")
        kept = [rows[0], *(row for row in rows[1:] if int(row[column]) <= self.step)]
        if len(kept) < len(rows):
            with metrics_path.open("w", newline="") as f:
                csv.writer(f).writerows(kept)
        seconds = float(kept[-1][rows[0].index("seconds")]) if len(kept) > 1 and "seconds" in rows[0] else 0.0
        return True, seconds

    # ---- the loop -----------------------------------------------------------------------------------
    def train(self) -> Path:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.try_resume()
        main = ranks.is_main()  # the one that logs
        metrics_path = self.output_dir / METRICS_FILE if main else Path(os.devnull)
        kept_log, seconds_before = self._keep_logged_steps(metrics_path) if main else (False, 0.0)
        new_log = not kept_log
        with metrics_path.open("w" if new_log else "a", newline="") as f:
            log = csv.writer(f)
            bar = tqdm(total=self.total_steps, initial=self.step, desc=self.name, unit="step", disable=not main)
            start = time.monotonic() - seconds_before
            micro = 0
            while self.step < self.total_steps:
                for batch in self.batches():
                    # A batch with nothing left in it (every record skipped) is passed over. With several ranks
                    # each still takes its total_steps steps, a gradient all-reduce each, so they stay in step.
                    if batch is None:
                        continue
                    loss, extra = self.compute_loss(batch)
                    if self.engine is not None:
                        self.engine.backward(loss)  # DeepSpeed divides by the accumulation steps itself
                        self.engine.step()
                    else:
                        (loss / self.grad_accum).backward()
                    micro += 1
                    if micro % self.grad_accum:
                        continue
                    if self.engine is None:
                        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
                        self.optimizer.step()
                        self.scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    value = loss.item()
                    lr = self.scheduler.get_last_lr()[0]
                    if new_log:
                        log.writerow([*self.metrics_prefix, "step", "loss", *extra, "learning_rate", "seconds"])
                        new_log = False
                    log.writerow(
                        [
                            *self.metrics_prefix.values(),
                            self.step,
                            f"{value:.4f}",
                            *(f"{v:.4f}" for v in extra.values()),
                            f"{lr:.3e}",
                            f"{time.monotonic() - start:.1f}",
                        ]
                    )
                    bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.1e}")
                    bar.update()
                    if self.save_every and self.step % self.save_every == 0:
                        f.flush()
                        self.save()
                    if self.step >= self.total_steps:
                        break
            bar.close()
        return self.save(final=True)
