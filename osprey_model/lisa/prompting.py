"""LISA's prompt (LLaVA v1's ``llava_v1`` template with the image between ``<im_start>`` / ``<im_end>``), its
token ids, and the answer text, as the released chat code makes them.

The released tokenizer is transformers 4.31's slow LLaMA tokenizer, which drops the whitespace next to an
added token ("USER:" is followed directly by ``<im_start>``, and the newline after ``<im_end>`` goes too).
The prompt is therefore assembled from ids: text pieces tokenised on their own, the added tokens' ids
between them, ``IMAGE_TOKEN_INDEX`` where the image goes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..conversation import SYSTEM
from ..modeling_osprey import IMAGE_TOKEN_INDEX
from ..tokenization import use_legacy_llama_pretokenization

IM_START, IM_END, SEG = "<im_start>", "<im_end>", "[SEG]"
MAX_QUERY_TOKENS = 512  # the released chat's tokenizer max_length


@dataclass(frozen=True)
class LisaTokens:
    """The added tokens' ids, read from the tokenizer: they differ per release (7B-v1: <im_start> 32001,
    <im_end> 32002, [SEG] 32003; Llama2-13B: [SEG] 32000, <im_start> 32001, <im_end> 32002)."""

    im_start: int
    im_end: int
    seg: int

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> LisaTokens:
        ids = {}
        for token in (IM_START, IM_END, SEG):
            token_id = tokenizer.convert_tokens_to_ids(token)  # not tokenizer(token): that may add "▁" (#55)
            if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
                raise ValueError(f"the tokenizer has no {token} token: not a LISA tokenizer (added_tokens.json?)")
            ids[token] = token_id
        return cls(im_start=ids[IM_START], im_end=ids[IM_END], seg=ids[SEG])


def load_lisa_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    model_dir = Path(model_dir)
    if not any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise FileNotFoundError(f"no tokenizer in {model_dir}: expected tokenizer.model (and added_tokens.json)")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True, local_files_only=True, legacy=True)
    use_legacy_llama_pretokenization(tokenizer)
    LisaTokens.of(tokenizer)  # refuse a folder without LISA's tokens now, not at the first query
    return tokenizer


def check_query(query: str) -> str:
    query = query.strip()
    if not query:
        raise ValueError("empty query: say what to segment, e.g. 'Where can I throw away this cup?'")
    if "<image>" in query or IM_START in query or IM_END in query:
        raise ValueError("the query may not contain <image>, <im_start> or <im_end>: the image is added for you")
    return query


def tokenize_lisa_prompt(tokenizer: PreTrainedTokenizerBase, query: str, question_first: bool = False) -> list[int]:
    """``<s> {system} USER: <im_start><image><im_end>\\n{query} ASSISTANT:`` as the released model reads it.

    ``question_first`` (``LisaConfig.question_first``, the tiny shapes model only):
    ``<s> {system} USER: {query}<im_start><image><im_end> ASSISTANT:``, so that each image token can compare
    itself with what the question asks for.
    """
    tokens = LisaTokens.of(tokenizer)
    system = list(tokenizer(f"{SYSTEM} USER:").input_ids)  # with BOS
    image = [tokens.im_start, IMAGE_TOKEN_INDEX, tokens.im_end]
    if question_first:
        query_ids = tokenizer(check_query(query), add_special_tokens=False).input_ids
        tail = tokenizer("ASSISTANT:", add_special_tokens=False).input_ids  # "▁A" "SS" ..., as after a query
        ids = [*system, *query_ids, *image, *tail]
    else:
        query_ids = tokenizer(f"{check_query(query)} ASSISTANT:", add_special_tokens=False).input_ids
        ids = [*system, *image, *query_ids]
    if len(query_ids) > MAX_QUERY_TOKENS:
        raise ValueError(f"the query is {len(query_ids)} tokens long; at most {MAX_QUERY_TOKENS} are read")
    return ids


def answer_text(tokenizer: PreTrainedTokenizerBase, tokens: list[int]) -> str:
    """The answer as the released chat prints it: special tokens kept ([SEG]), end of sequence dropped,
    newlines removed, double spaces collapsed."""
    if tokens and tokens[-1] == tokenizer.eos_token_id:
        tokens = tokens[:-1]
    text = tokenizer.decode(tokens, skip_special_tokens=False)
    text = re.sub(rf"(?<=\S){re.escape(SEG)}", f" {SEG}", text)  # "Sure, [SEG]." as the training text spells it
    return " ".join(text.replace("\n", "").split())
