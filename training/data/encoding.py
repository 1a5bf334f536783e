"""Conversations → ``input_ids`` and ``labels``, as the released training does it.

Only the assistant's answers (and the ``</s>`` after each) are learned; the system prompt, the user
turns, and every image / region position carry ``IGNORE_INDEX``. Over-long samples lose their last rounds
(with a warning); a sample left with no answer token at all is refused, never trained on silently.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from osprey_model.conversation import (
    IMAGE_PREFIX,
    REGION_TOKENS,
    ROLES,
    Conversation,
    multi_region_prefix,
)
from osprey_model.modeling_osprey import IGNORE_INDEX
from osprey_model.tokenization import tokenize_prompt

logger = logging.getLogger(__name__)

NUMBERED_REGION = re.compile(r"<region(\d+)>")
SINGLE_REGION = "<region>"


class SampleError(ValueError):
    """A record that cannot become a training sample; the loader reports it with the record id and skips it."""


@dataclass
class EncodedSample:
    input_ids: torch.Tensor  # (L,), IMAGE_TOKEN_INDEX where the image goes
    labels: torch.Tensor  # (L,), IGNORE_INDEX except answer tokens
    region_order: list[int]  # which annotation each <mask> in input_ids stands for, in order


def region_text(turns: list[tuple[str, str]], region_count: int) -> tuple[list[tuple[str, str]], list[int]]:
    """Rewrite region references into Osprey's prompt text; return the turns and the mask order.

    ``<regionN>`` (1-based, any number of regions): the first question gets the multi-region prefix that
    lists every region as ``regionK<mask><pos>``, and the references become plain ``regionN``.
    ``<region>``: each occurrence becomes ``<mask><pos>`` for the next region in order (one per turn in
    the region-text data).
    """
    text = " ".join(q for q, _ in turns)
    numbered = [int(n) for n in NUMBERED_REGION.findall(text)]
    if numbered:
        bad = [n for n in numbered if not 1 <= n <= region_count]
        if bad:
            raise SampleError(f"region index out of range: <region{bad[0]}> but the record has {region_count} regions")
        out = [(NUMBERED_REGION.sub(lambda m: f"region{m.group(1)}", q), a) for q, a in turns]
        out[0] = (multi_region_prefix(region_count) + out[0][0], out[0][1])
        return out, list(range(region_count))
    singles = text.count(SINGLE_REGION)
    if singles > region_count:
        raise SampleError(f"region index out of range: {singles} <region> references, {region_count} regions")
    return [(q.replace(SINGLE_REGION, REGION_TOKENS), a) for q, a in turns], list(range(singles))


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    turns: list[tuple[str, str]],
    *,
    image_token_count: int,
    max_length: int,
    sample_id: str = "?",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vicuna-v1 text with ``<image>`` in the first user turn → ids and labels that fit ``max_length``.

    ``max_length`` counts the spliced sequence (the image placeholder becomes ``image_token_count``).
    """
    if not turns:
        raise SampleError("no conversation turns")
    kept = list(turns)
    while kept:
        ids, labels = _encode(tokenizer, kept)
        length = len(ids) - 1 + image_token_count
        if length <= max_length:
            break
        if len(kept) == 1:
            cut = max_length - image_token_count + 1
            ids, labels = ids[:cut], labels[:cut]
            logger.warning("sample %s: the answer is cut to fit max_length=%d", sample_id, max_length)
            break
        kept.pop()
        logger.warning("sample %s: dropped its last round to fit max_length=%d", sample_id, max_length)
    if not any(label != IGNORE_INDEX for label in labels):
        raise SampleError(f"no answer token fits in max_length={max_length}")
    return torch.tensor(ids), torch.tensor(labels)


def _encode(tokenizer: PreTrainedTokenizerBase, turns: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
    conversation = Conversation()
    prefix_lengths = []  # (answer start, answer end) in tokens, measured on prefixes of the full text
    for i, (question, answer) in enumerate(turns):
        conversation.append(ROLES[0], (IMAGE_PREFIX if i == 0 else "") + question)
        conversation.append(ROLES[1], None)
        start = len(tokenize_prompt(tokenizer, conversation.prompt()))
        conversation.messages[-1] = (ROLES[1], answer)
        end = len(tokenize_prompt(tokenizer, conversation.prompt()))
        prefix_lengths.append((start, end))
    ids = tokenize_prompt(tokenizer, conversation.prompt())
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in prefix_lengths:
        labels[start:end] = ids[start:end]
    return ids, labels
