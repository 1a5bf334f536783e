"""A small BPE tokenizer for the tiny model, trained on the shapes world's text.

SentencePiece-style (``▁`` marks spaces, so decoding restores them), BOS added like LLaMA's, and the
``<mask>`` / ``<pos>`` tokens registered the way the real tokenizer gets them.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from osprey_model.tokenization import add_region_tokens

SPECIAL = ["<unk>", "<s>", "</s>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, region_tokens: bool = True) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
    if region_tokens:  # Osprey's <mask> / <pos>
        add_region_tokens(fast)
    return fast
