"""Tokenizer loading and the released prompt tokenisation (``<image>`` split out, ``<mask>``/``<pos>`` special)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import decoders, normalizers
from transformers import AutoTokenizer, LlamaTokenizerFast, PreTrainedTokenizerBase

from .conversation import IMAGE_TOKEN, MASK_TOKEN, POS_TOKEN
from .modeling_osprey import IMAGE_TOKEN_INDEX


def add_region_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """Register ``<mask>`` and ``<pos>`` as special tokens (idempotent) and return their ids.

    The embedding table is deliberately not resized: the ids may lie past the vocabulary, because their
    embeddings are always overwritten by the region's mask and pos tokens.
    """
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [MASK_TOKEN, POS_TOKEN]}, replace_additional_special_tokens=False
    )
    return _token_id(tokenizer, MASK_TOKEN), _token_id(tokenizer, POS_TOKEN)


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
        raise ValueError(f"{token} is not a token of this tokenizer")
    return token_id


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    model_dir = Path(model_dir)
    if not any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise FileNotFoundError(
            f"no tokenizer in {model_dir}: expected tokenizer.json or tokenizer.model (they ship with the checkpoint)"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True, local_files_only=True, legacy=True)
    use_legacy_llama_pretokenization(tokenizer)
    add_region_tokens(tokenizer)
    return tokenizer


def use_legacy_llama_pretokenization(tokenizer: PreTrainedTokenizerBase) -> None:
    """Tokenise as the released (slow, legacy) LLaMA tokenizer does, whatever the folder's files say.

    Every text piece gets sentencepiece's dummy-prefix ``▁``, also the one right after ``<pos>``. A
    ``tokenizer_config.json`` with ``"legacy": false``, a ``tokenizer.json`` converted that way, or the
    ``"add_prefix_space": null`` that ``save_pretrained`` writes each drop a ``▁`` somewhere, and the ids
    then differ from those the released model was trained on. This is the legacy conversion's own
    normalizer and decoder, so legacy folders are unchanged.
    """
    if not isinstance(tokenizer, LlamaTokenizerFast):
        return
    backend = tokenizer.backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.legacy = True


def tokenize_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids with ``IMAGE_TOKEN_INDEX`` where ``<image>`` stood.

    As the released code does it: each piece around ``<image>`` is tokenised on its own and only the
    first keeps its BOS token.
    """
    pieces = [tokenizer(piece).input_ids for piece in prompt.split(IMAGE_TOKEN)]
    bos = tokenizer.bos_token_id
    ids = list(pieces[0])
    for piece in pieces[1:]:
        ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(piece[1:] if bos is not None and piece[:1] == [bos] else piece)
    return ids
