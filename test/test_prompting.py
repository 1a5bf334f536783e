"""Prompt text, real LLaMA-2 tokenisation (offline) and the splice of image, mask and pos tokens."""

from __future__ import annotations

import pytest
import torch

from osprey_model import OspreyPredictor
from osprey_model.conversation import (
    PROMPTS,
    SYSTEM,
    multi_region_prompt,
    region_prompt,
    single_region_prompt,
)
from osprey_model.image_processing import masks_to_tensor
from osprey_model.modeling_osprey import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from osprey_model.tiny import llama2_tokenizer
from osprey_model.tokenization import add_region_tokens, tokenize_prompt


def test_single_region_prompt_is_vicuna_v1() -> None:
    expected = (
        f"{SYSTEM} USER: <image>\nThis provides an overview of the picture.\n"
        "Please give me a short description of <mask><pos>. Using a short phrase. ASSISTANT:"
    )
    assert single_region_prompt("short") == expected


def test_free_question_names_the_region() -> None:
    assert region_prompt("What is <region> made of?") == "What is <mask><pos> made of?"
    assert region_prompt("What colour is it?").endswith("(region: <mask><pos>)")
    with pytest.raises(ValueError, match="empty prompt"):
        region_prompt("  ")


def test_multi_turn_chat_prompt() -> None:
    prompt = multi_region_prompt(2, [("What is <region1>?", "A red disk."), ("Is it left of <region2>?", None)])
    assert prompt == (
        f"{SYSTEM} USER: <image>\nThis provides an overview of the picture.\n"
        "Ther are 2 part regions in the picture: region1<mask><pos>,region2<mask><pos>. What is region1? "
        "ASSISTANT: A red disk.</s>USER: Is it left of region2? ASSISTANT:"
    )
    one = multi_region_prompt(1, [("What is <region1>?", None)])
    assert "Ther are 1 part region in the picture: region1<mask><pos>. What is region1?" in one
    with pytest.raises(ValueError, match="unanswered"):
        multi_region_prompt(1, [("What?", "That.")])


def test_llama_tokenizer_region_tokens_do_not_grow_vocab() -> None:
    tokenizer = llama2_tokenizer()
    assert len(tokenizer) == 32000
    mask_id, pos_id = add_region_tokens(tokenizer)
    assert (mask_id, pos_id) == (32000, 32001)
    assert add_region_tokens(tokenizer) == (32000, 32001)  # idempotent
    ids = tokenize_prompt(
        tokenizer, multi_region_prompt(2, [(PROMPTS["category"].replace("<mask><pos>", "<region2>"), None)])
    )
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    mask_at = [i for i, t in enumerate(ids) if t == mask_id]
    assert len(mask_at) == 2 and all(ids[i + 1] == pos_id for i in mask_at)
    # Pieces around <image> are tokenised on their own, as the released tokenizer_image_token does:
    # "USER:" "▁" <image> "▁" "\n" "This" — the LLaVA/Osprey token pattern of the legacy LLaMA tokenizer.
    at = ids.index(IMAGE_TOKEN_INDEX)
    assert ids[at - 4 : at + 4] == [3148, 1001, 29901, 29871, IMAGE_TOKEN_INDEX, 29871, 13, 4013]


def test_two_region_splice_positions(tiny_predictor: OspreyPredictor, scene) -> None:
    image, masks = scene
    model = tiny_predictor.model
    frame = tiny_predictor.encode(image)
    mask_tensor = masks_to_tensor(masks, image.shape[:2])
    ids = torch.tensor(
        tokenize_prompt(tiny_predictor.tokenizer, multi_region_prompt(2, [("Describe <region1>.", None)]))
    )
    labels = ids.clone()
    mask_tokens, pos_tokens = model.encode_regions(frame.features, 0, mask_tensor)
    with torch.no_grad():
        embeds, out_labels = model.splice(ids, frame.features.image_tokens[0], mask_tokens, pos_tokens, labels)

    image_tokens = frame.features.image_tokens[0]
    count = tiny_predictor.image_token_count
    assert image_tokens.shape == (count, model.config.hidden_size)
    assert embeds.shape == (len(ids) - 1 + count, model.config.hidden_size)
    p = int((ids == IMAGE_TOKEN_INDEX).nonzero())
    torch.testing.assert_close(embeds[p : p + count], image_tokens)
    mask_at = (ids == model.mask_token_id).nonzero().flatten() + count - 1  # shifted by the image tokens
    assert len(mask_at) == 2
    for region, at in enumerate(mask_at):
        torch.testing.assert_close(embeds[at], mask_tokens[region])
        torch.testing.assert_close(embeds[at + 1], pos_tokens[region])
    visual = torch.zeros(len(embeds), dtype=torch.bool)
    visual[p : p + count] = True
    visual[mask_at] = visual[mask_at + 1] = True
    assert (out_labels[visual] == IGNORE_INDEX).all() and (out_labels[~visual] != IGNORE_INDEX).all()
    # Text embeddings are the embedding table's rows.
    table = model.language_model.get_input_embeddings().weight
    torch.testing.assert_close(embeds[0], table[ids[0]])


def test_splice_refuses_count_mismatch(tiny_predictor: OspreyPredictor) -> None:
    model = tiny_predictor.model
    ids = torch.tensor(tokenize_prompt(tiny_predictor.tokenizer, single_region_prompt("short")))
    two = torch.zeros(2, model.config.hidden_size)
    with pytest.raises(ValueError, match="1 <mask> tokens but 2 masks"):
        model.splice(ids, None, two, two)


def test_different_masks_give_different_logits(tiny_predictor: OspreyPredictor, scene) -> None:
    """The region tokens reach the LLM: the answer distribution depends on the mask."""
    image, masks = scene
    model = tiny_predictor.model
    ids = torch.tensor(tokenize_prompt(tiny_predictor.tokenizer, single_region_prompt("short")))
    pixels = tiny_predictor.processor(image)
    mask_tensor = masks_to_tensor(masks, image.shape[:2])
    with torch.no_grad():
        logits = [model([ids], pixels, [mask_tensor[i : i + 1]]).logits[0, -1] for i in range(2)]
    assert not torch.allclose(logits[0], logits[1])
