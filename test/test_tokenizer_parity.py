"""Token ids equal the released (slow, legacy) LLaMA tokenizer's for every prompt, whatever the folder holds.

The folders are built from a small sentencepiece model trained here (no download): ``tokenizer.model``
alone with each ``tokenizer_config.json`` a user may have, and ``tokenizer.json`` converted both ways.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer, LlamaTokenizer

from osprey_model.conversation import PROMPTS, multi_region_prompt, single_region_prompt
from osprey_model.tokenization import add_region_tokens, load_tokenizer, tokenize_prompt

CORPUS = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions. USER: ASSISTANT: This provides an overview of the "
    "picture. Please give me a short description of Using a short phrase. Can you give me a detailed "
    "description of? What is the category of Using only one word or phrase. Ther are part region regions in "
    "the picture: region1 region2 Answer the question using a single word or phrase. red disk blue square 0 1 2"
)

PROMPT_TEXTS = [single_region_prompt(name) for name in PROMPTS] + [
    single_region_prompt("What colour is <region>?"),
    multi_region_prompt(1, [("What is <region1>?", None)]),
    multi_region_prompt(2, [("What is <region1>?", "A red disk."), ("Is it left of <region2>?", None)]),
]


def write_sentencepiece_model(path: Path) -> None:
    """A LLaMA-like BPE (byte fallback, dummy prefix, ids 0/1/2 = unk/bos/eos), trained in ~0.2 s."""
    rng, words = random.Random(0), CORPUS.split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 16))) for _ in range(2000)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=600,
        byte_fallback=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spm") / "tokenizer.model"
    write_sentencepiece_model(path)
    return path


def released_ids(spm_file: Path, prompt: str) -> list[int]:
    reference = LlamaTokenizer(vocab_file=str(spm_file), legacy=True)
    add_region_tokens(reference)
    return tokenize_prompt(reference, prompt)


FOLDERS = {
    "model-legacy-false": {"legacy": False},
    "model-legacy-true": {"legacy": True},
    "model-no-legacy-key": {},
    "model-saved-config": {"legacy": False, "add_prefix_space": None},  # what save_pretrained writes
    "json-converted-legacy": "json:True",
    "json-converted-non-legacy": "json:False",
}


def make_folder(kind: str, spm_file: Path, root: Path) -> Path:
    folder = root / kind
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(spm_file.read_bytes())
    spec = FOLDERS[kind]
    base = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if isinstance(spec, dict):
        (folder / "tokenizer_config.json").write_text(json.dumps({**base, **spec}))
        return folder
    legacy = spec == "json:True"
    (folder / "tokenizer_config.json").write_text(json.dumps({**base, "legacy": legacy}))
    converted = AutoTokenizer.from_pretrained(str(folder), legacy=legacy, from_slow=True, local_files_only=True)
    converted.save_pretrained(folder)  # writes tokenizer.json (and its own config)
    (folder / "tokenizer.model").unlink()  # the json alone must carry it
    return folder


@pytest.mark.parametrize("kind", list(FOLDERS))
def test_prompt_ids_equal_the_released_slow_legacy_tokenizer(kind: str, spm_file: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(make_folder(kind, spm_file, tmp_path))
    for prompt in PROMPT_TEXTS:
        got, expected = tokenize_prompt(tokenizer, prompt), released_ids(spm_file, prompt)
        assert got == expected, (
            f"{kind}: {tokenizer.convert_ids_to_tokens([i for i in got if i >= 0])[-12:]} vs "
            f"{tokenizer.convert_ids_to_tokens([i for i in expected if i >= 0])[-12:]}"
        )
    answer = "A red disk."
    assert tokenizer.decode(tokenizer(answer, add_special_tokens=False).input_ids) == answer
