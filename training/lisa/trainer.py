"""LISA's trainer on the shared loop: the released recipe (``recipe.py``) over batches of (image, query,
answer, target masks), with the frozen encoders' outputs cached per image when the data are a fixed set.

Two trainable sets:
- ``released``: LoRA on q/v, ``embed_tokens``, ``lm_head``, ``text_hidden_fcs``, SAM's mask decoder;
- ``ground``: the whole LLM, the projector, ``text_hidden_fcs`` and SAM's mask decoder (its encoder frozen),
  for a base that, unlike LLaVA, has not yet learned to read images (the tiny shapes-world model's curriculum).

``prompt_weight`` > 0 adds a regression of each ``[SEG]`` prompt onto a known prompt embedding for its
target (``LisaItem.prompt_targets``, e.g. one SAM's decoder was taught to segment that object by): the
curriculum's "prompts first" signal, off in the released recipe.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPImageProcessor, PreTrainedTokenizerBase

from osprey_model.lisa import LisaForCausalLM
from osprey_model.lisa.prompting import LisaTokens
from osprey_model.sam import SamFrame, SamSegmenter

from ..loop import TrainingLoop
from ..streams import SeededStream
from .losses import lisa_loss
from .recipe import LisaRecipe, answer_states, make_sample, merge_lora, prepare_for_training, seg_mask_logits, text_loss

logger = logging.getLogger(__name__)


@dataclass
class LisaItem:
    """One training question: the image, the query, the target answer and its masks (one per ``[SEG]``)."""

    image: np.ndarray  # (H, W, 3) uint8
    query: str
    answer: str
    targets: list[np.ndarray]  # (H, W) uint8 0 / 1 / 255 each
    image_id: str | None = None  # set for a fixed dataset: the frozen encoders' outputs are cached under it
    prompt_targets: torch.Tensor | None = None  # (N_seg, 256): what each [SEG] prompt should be (curriculum)


@dataclass
class LisaTrainConfig:
    output_dir: str
    steps: int
    batch_size: int = 2  # the release: 2 per GPU, 10 accumulation steps, 8 GPUs
    grad_accum: int = 1
    trainable: str = "released"  # or "ground"
    learning_rate: float = 0.0  # 0 = the recipe's (3e-4)
    warmup_steps: int = -1  # -1 = the recipe's (100)
    schedule: str = "warmup_decay"
    prompt_weight: float = 0.0
    save_every: int = 0
    deepspeed_config: str = ""
    feature_cache_size: int = 256  # images whose frozen encoders' outputs are kept (SAM ViT-H: 2 MB each in bf16)
    seed: int = 0


class LisaTrainer(TrainingLoop):
    def __init__(
        self,
        model: LisaForCausalLM,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: CLIPImageProcessor,
        items: Iterator[LisaItem],
        config: LisaTrainConfig,
        recipe: LisaRecipe | None = None,
    ) -> None:
        recipe = recipe or LisaRecipe()
        self.config, self.recipe, self.tokenizer, self.image_processor = config, recipe, tokenizer, image_processor
        self.items = items
        self.seg_token_id = LisaTokens.of(tokenizer).seg
        self.segmenter = SamSegmenter(model.visual_model)
        torch.manual_seed(config.seed)
        if config.trainable == "released":
            params = prepare_for_training(model, recipe)
        elif config.trainable == "ground":
            model.requires_grad_(False)
            for module in (
                model.language_model,
                model.mm_projector,
                model.text_hidden_fcs,
                model.visual_model.mask_decoder,
            ):
                module.requires_grad_(True)
            params = [p for p in model.parameters() if p.requires_grad]
        else:
            raise ValueError(f"unknown trainable set {config.trainable!r}: released or ground")
        super().__init__(
            model,
            params,
            config.output_dir,
            name=f"LISA ({config.trainable})",
            total_steps=config.steps,
            learning_rate=config.learning_rate or recipe.learning_rate,
            warmup_steps=recipe.warmup_steps if config.warmup_steps < 0 else config.warmup_steps,
            schedule=config.schedule,
            betas=recipe.betas,
            weight_decay=recipe.weight_decay,
            max_grad_norm=recipe.max_grad_norm,
            grad_accum=config.grad_accum,
            save_every=config.save_every,
            micro_batch_size=config.batch_size,
            deepspeed_config=config.deepspeed_config,
        )
        self.lisa: LisaForCausalLM = model
        self.cache: OrderedDict[str, tuple[torch.Tensor, SamFrame]] = OrderedDict()

    # ---- data -----------------------------------------------------------------------------------------
    def batches(self) -> Iterator[list[LisaItem]]:
        while True:
            batch = [item for _, item in zip(range(self.config.batch_size), self.items, strict=False)]
            if not batch:
                return
            yield batch

    def data_state(self) -> dict[str, Any] | None:
        return self.items.state_dict() if isinstance(self.items, SeededStream) else None

    def load_data_state(self, state: dict[str, Any]) -> None:
        if isinstance(self.items, SeededStream):
            self.items.load_state_dict(state)
        else:  # a checkpoint of a seeded run resumed with other data
            logger.warning("%s: items are not a SeededStream; they start from their beginning", self.name)

    def encode(self, items: list[LisaItem]) -> tuple[torch.Tensor, list[SamFrame]]:
        """CLIP features (B, P, C) and SAM frames of the items' images; both encoders are frozen, so an image
        seen lately (``image_id`` set) is not encoded again."""
        features: dict[int, torch.Tensor] = {}
        frames: dict[int, SamFrame] = {}
        for i, item in enumerate(items):  # cached ones first: adding new ones below may evict them
            if item.image_id is not None and item.image_id in self.cache:
                features[i], frames[i] = self.cache[item.image_id]
                self.cache.move_to_end(item.image_id)
        todo = [i for i in range(len(items)) if i not in features]
        if todo:
            pixels = self.image_processor(
                images=[items[i].image for i in todo], return_tensors="pt", input_data_format="channels_last"
            )["pixel_values"]
            computed = self.lisa.clip_features(pixels)
            for row, i in enumerate(todo):
                frame = self.segmenter.encode(items[i].image)
                frame = SamFrame(frame.embedding.clone(), frame.image_hw, frame.input_hw)  # out of inference mode
                features[i], frames[i] = computed[row].clone(), frame
                image_id = items[i].image_id
                if image_id is not None and self.config.feature_cache_size:
                    self.cache[image_id] = (features[i], frame)
                    while len(self.cache) > self.config.feature_cache_size:
                        self.cache.popitem(last=False)
        return torch.stack([features[i] for i in range(len(items))]), [frames[i] for i in range(len(items))]

    # ---- the loss -------------------------------------------------------------------------------------
    def compute_loss(self, batch: list[LisaItem]) -> tuple[torch.Tensor, dict[str, float]]:
        features, frames = self.encode(batch)
        image_tokens = self.lisa.mm_projector(features.to(self.lisa.dtype))
        question_first = self.lisa.config.question_first  # the prompt order the model is (and will be) asked in
        samples = [make_sample(self.tokenizer, i.query, i.answer, i.targets, question_first) for i in batch]
        states = answer_states(self.lisa, samples, list(image_tokens))
        ce = text_loss(self.lisa, states)
        mask_logits, targets, prompt_errors = [], [], []
        for i, (item, sample) in enumerate(zip(batch, samples, strict=True)):
            seg = states.seg_states(i, self.seg_token_id)
            targets.append(sample.targets.to(states.hidden.device))
            if not len(seg):
                mask_logits.append(states.hidden.new_zeros((0, *sample.targets.shape[1:])))
                continue
            mask_logits.append(seg_mask_logits(self.lisa, self.segmenter, seg, frames[i]))
            if self.config.prompt_weight and item.prompt_targets is not None:
                wanted = item.prompt_targets.to(seg.device)
                prompt_errors.append(F.mse_loss(self.lisa.seg_prompts(seg), wanted, reduction="none").mean(1))
        loss = lisa_loss(ce, mask_logits, targets)
        total, extra = loss.total, {"ce": loss.ce.item(), "bce": loss.bce.item(), "dice": loss.dice.item()}
        if self.config.prompt_weight:
            prompt_loss = torch.cat(prompt_errors).mean() if prompt_errors else ce.new_zeros(())
            total = total + self.config.prompt_weight * prompt_loss
            extra["prompt"] = prompt_loss.item()
        return total, extra

    # ---- checkpoints ----------------------------------------------------------------------------------
    def save_model(self, target: Path, final: bool) -> None:
        """The released layout; LoRA merged into the final one (a resumable checkpoint keeps the adapters)."""
        if final:
            merge_lora(self.lisa)
            self.lisa.save_pretrained(target)
        else:
            torch.save({k: v for k, v in self.lisa.state_dict().items()}, target / "training_state_dict.pt")
        self.tokenizer.save_pretrained(target)
        (target / "lisa_train_config.json").write_text(json.dumps(asdict(self.config), indent=2))

    def load_model(self, checkpoint: Path) -> None:
        state = torch.load(checkpoint / "training_state_dict.pt", weights_only=True)
        self.lisa.load_state_dict(state)

    def train(self) -> Path:
        self.lisa.train()
        self.lisa.visual_model.image_encoder.eval()
        if self.lisa.vision_tower is not None:
            self.lisa.vision_tower.eval()
        return super().train()
