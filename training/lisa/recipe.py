"""LISA's training recipe on our model: what trains, the answer's tokens and labels, one step's loss.

Released choices (``train_ds.py``): LoRA r=8 (alpha 16, dropout 0.05) on the LLM's q/v projections;
``embed_tokens``, ``lm_head``, ``text_hidden_fcs`` and SAM's mask decoder trained in full; CLIP, the
projector and SAM's image and prompt encoders frozen; AdamW lr 3e-4, betas (0.9, 0.95), no weight decay,
linear warm-up over 100 steps then linear decay to 0 (DeepSpeed's WarmupDecayLR), gradient clipping 1.0.
During training the ``[SEG]`` states are read teacher-forced: the final-norm state before each ``[SEG]`` of
the target answer, as the released forward does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from osprey_model.lisa import LisaForCausalLM
from osprey_model.lisa.prompting import SEG, LisaTokens, tokenize_lisa_prompt
from osprey_model.sam import SamFrame, SamSegmenter

from .losses import LisaLoss, lisa_loss

IGNORE_INDEX = -100
LORA_TARGETS = ("q_proj", "v_proj")


@dataclass(frozen=True)
class LisaRecipe:
    learning_rate: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05


def prepare_for_training(model: LisaForCausalLM, recipe: LisaRecipe) -> list[nn.Parameter]:
    """Freeze everything, add LoRA to the LLM's q/v in place (the module layout stays ours), unfreeze what
    the released recipe trains in full; returns the trainable parameters."""
    model.requires_grad_(False)
    if recipe.lora_rank:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(
            r=recipe.lora_rank,
            lora_alpha=recipe.lora_alpha,
            lora_dropout=recipe.lora_dropout,
            target_modules=list(LORA_TARGETS),
        )
        inject_adapter_in_model(config, model.language_model)  # LoRA weights are made trainable by peft
    model.language_model.get_input_embeddings().requires_grad_(True)
    model.language_model.lm_head.requires_grad_(True)
    model.text_hidden_fcs.requires_grad_(True)
    model.visual_model.mask_decoder.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def merge_lora(model: LisaForCausalLM) -> None:
    """Fold the LoRA adapters into the q/v weights and put plain Linears back: the released layout."""
    from peft.tuners.lora import LoraLayer

    for parent in list(model.language_model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, name, child.get_base_layer())


def answer_ids(tokenizer: PreTrainedTokenizerBase, answer: str) -> list[int]:
    """The target answer's ids (with the end of sequence), ``[SEG]`` as its own id and no whitespace next to
    it, as the released tokenizer made the training text ("Sure, [SEG]." → Sure , [SEG] . </s>)."""
    seg = LisaTokens.of(tokenizer).seg
    ids: list[int] = []
    for i, piece in enumerate(answer.split(SEG)):
        if i:
            ids.append(seg)
        if piece.strip():
            ids += tokenizer(piece.strip(), add_special_tokens=False).input_ids
    return [*ids, tokenizer.eos_token_id]


@dataclass
class Sample:
    """One question about one image, and its target answer and masks (one per [SEG], in order)."""

    input_ids: torch.Tensor  # prompt + answer, IMAGE_TOKEN_INDEX where the image goes
    labels: torch.Tensor  # IGNORE_INDEX but for the answer
    targets: torch.Tensor  # (N_seg, H, W) 0 / 1 / 255


def make_sample(
    tokenizer: PreTrainedTokenizerBase, query: str, answer: str, targets: list[np.ndarray], question_first: bool = False
) -> Sample:
    prompt = tokenize_lisa_prompt(tokenizer, query, question_first)
    target_ids = answer_ids(tokenizer, answer)
    seg = LisaTokens.of(tokenizer).seg
    if target_ids.count(seg) != len(targets):
        raise ValueError(f"the answer has {target_ids.count(seg)} [SEG] for {len(targets)} target masks")
    ids = torch.tensor(prompt + target_ids)
    labels = torch.tensor([IGNORE_INDEX] * len(prompt) + target_ids)
    masks = torch.as_tensor(np.stack(targets)) if targets else torch.zeros((0, 1, 1), dtype=torch.uint8)
    return Sample(ids, labels, masks.long())


@dataclass
class AnswerStates:
    """The decoder's final-norm states over a padded batch of prompt + answer rows, and the shifted labels."""

    hidden: torch.Tensor  # (B, L, hidden)
    labels: torch.Tensor  # (B, L), IGNORE_INDEX outside the answers

    def seg_states(self, row: int, seg_token_id: int) -> torch.Tensor:
        """The states that predict each ``[SEG]`` of row ``row``'s answer (position p predicts token p + 1)."""
        before_seg = (self.labels[row, 1:] == seg_token_id).nonzero().flatten()
        return self.hidden[row, before_seg]


def answer_states(model: LisaForCausalLM, samples: list[Sample], image_tokens: list[torch.Tensor]) -> AnswerStates:
    """Teacher-forced pass over the samples (image tokens spliced in, right-padded)."""
    rows = [model.splice(s.input_ids, tokens) for s, tokens in zip(samples, image_tokens, strict=True)]
    row_labels = []
    for s, row in zip(samples, rows, strict=True):
        shift = len(row) - len(s.input_ids)  # the image's tokens replace one placeholder
        at = int((s.input_ids < 0).nonzero()[0])
        labels = torch.cat([s.labels[:at], s.labels.new_full((shift + 1,), IGNORE_INDEX), s.labels[at + 1 :]])
        row_labels.append(labels)
    length = max(len(r) for r in rows)
    embeds = rows[0].new_zeros((len(rows), length, rows[0].shape[-1]))
    attention = torch.zeros((len(rows), length), dtype=torch.long, device=embeds.device)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long, device=embeds.device)
    for i, (row, lab) in enumerate(zip(rows, row_labels, strict=True)):
        embeds[i, : len(row)], attention[i, : len(row)], labels[i, : len(row)] = row, 1, lab.to(embeds.device)
    hidden = model.language_model.model(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
    return AnswerStates(hidden, labels)


def answer_logits(model: LisaForCausalLM, states: AnswerStates) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits at the answer's positions and the tokens they predict; the LM head runs on those positions
    only (the rest of the batch's logits would be discarded anyway, and the vocabulary makes them the
    costliest part)."""
    predicting = states.labels[:, 1:] != IGNORE_INDEX
    return model.language_model.lm_head(states.hidden[:, :-1][predicting]).float(), states.labels[:, 1:][predicting]


def text_loss(model: LisaForCausalLM, states: AnswerStates) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens."""
    return F.cross_entropy(*answer_logits(model, states))


def seg_mask_logits(
    model: LisaForCausalLM, segmenter: SamSegmenter, seg_states: torch.Tensor, frame: SamFrame
) -> torch.Tensor:
    """``[SEG]`` states (N, hidden) → mask logits (N, H, W) at the image's size, gradients kept."""
    low_res, _ = segmenter.decode_prompt_embeddings(frame, model.seg_prompts(seg_states))
    return segmenter.sam.postprocess_masks(low_res, frame.input_hw, frame.image_hw)[:, 0]


def sample_loss(
    model: LisaForCausalLM,
    segmenter: SamSegmenter,
    seg_token_id: int,
    samples: list[Sample],
    image_tokens: list[torch.Tensor],
    sam_frames: list[SamFrame],
) -> LisaLoss:
    """The released loss over a batch: text CE on the answers, then each ``[SEG]``'s mask from the state
    before it, upscaled to the image's size, against its target. CLIP tokens and SAM embeddings come
    computed (both encoders are frozen), so a trainer may cache them per image."""
    states = answer_states(model, samples, image_tokens)
    ce = text_loss(model, states)
    mask_logits, targets = [], []
    for i, sample in enumerate(samples):
        seg = states.seg_states(i, seg_token_id)
        if not len(seg):
            mask_logits.append(states.hidden.new_zeros((0, *sample.targets.shape[1:])))
        else:
            mask_logits.append(seg_mask_logits(model, segmenter, seg, sam_frames[i]))
        targets.append(sample.targets.to(states.hidden.device))
    return lisa_loss(ce, mask_logits, targets)
