"""The batched path answers exactly what the one-region-per-call path answers (greedy, token for token)."""

from __future__ import annotations

import numpy as np
import pytest

from osprey_model import OspreyPredictor
from osprey_model.shapes import random_shapes, render


def _frame(seed: int, count: int) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    image, masks = render(random_shapes(rng, 160, 120, count, overlap=0.3), 160, 120, rng)
    masks = [m for m in masks if m.any()]
    while len(masks) < count:  # fully hidden shapes: stand-in regions so the count is as asked
        box = np.zeros((120, 160), bool)
        box[10 * len(masks) : 10 * len(masks) + 8, 5:40] = True
        masks.append(box)
    return image, masks


@pytest.mark.parametrize("count", [1, 3, 8])
@pytest.mark.parametrize("prompt", ["short", "category", "detailed", "What colour is <region>?"])
def test_batched_equals_one_region_per_call(tiny_predictor: OspreyPredictor, count: int, prompt: str) -> None:
    image, masks = _frame(count, count)
    frame = tiny_predictor.encode(image)
    sequential = tiny_predictor.describe(frame, masks, prompt=prompt, max_new_tokens=6, batched=False)
    batched = tiny_predictor.describe(frame, masks, prompt=prompt, max_new_tokens=6, batched=True)
    assert batched == sequential and len(batched) == count


def test_prefix_is_prefilled_once_per_frame_and_prompt(tiny_predictor: OspreyPredictor) -> None:
    image, masks = _frame(3, 4)
    frame = tiny_predictor.encode(image)
    cache = tiny_predictor.prefix_cache
    hits, misses = cache.hits, cache.misses
    first = tiny_predictor.describe(frame, masks, max_new_tokens=4)
    again = tiny_predictor.describe(frame, masks[:2], max_new_tokens=4)
    assert (cache.misses - misses, cache.hits - hits) == (1, 1)
    assert again == first[:2]  # the stored prefix is not changed by a use


def test_early_stopping_rows_leave_the_batch(tiny_predictor: OspreyPredictor) -> None:
    """Per-sequence stopping: make EOS the greedy choice for one region only, via a hook on the LM head."""
    image, masks = _frame(5, 3)
    frame = tiny_predictor.encode(image)
    eos = tiny_predictor.tokenizer.eos_token_id
    head = tiny_predictor.model.language_model.lm_head
    calls = []

    def force_eos_for_first_row(module, inputs, output):
        calls.append(output.shape[0])
        if output.shape[0] == 3 and calls.count(3) == 1:  # the suffix prefill: region 0 ends right away
            output[0, -1, :] = -1e9
            output[0, -1, eos] = 1e9
        return output

    handle = head.register_forward_hook(force_eos_for_first_row)
    try:
        answers = tiny_predictor.describe(frame, masks, max_new_tokens=5)
    finally:
        handle.remove()
    assert answers[0] == "" and all(a != "" for a in answers[1:])
    assert calls[0] == 3  # the three suffixes as one batch (the shared prefix needs no logits)
    assert set(calls[1:]) == {2}  # later steps run only the two live rows


@pytest.mark.parametrize("count", [1, 5])
def test_static_cache_decoding_gives_the_same_tokens(tiny_predictor: OspreyPredictor, count: int) -> None:
    image, masks = _frame(7 + count, count)
    frame = tiny_predictor.encode(image)
    before, tiny_predictor.decode = tiny_predictor.decode, "dynamic"
    try:
        dynamic = tiny_predictor.describe(frame, masks, prompt="detailed", max_new_tokens=7)
        tiny_predictor.decode = "static"
        static = tiny_predictor.describe(frame, masks, prompt="detailed", max_new_tokens=7)
    finally:
        tiny_predictor.decode = before
    assert static == dynamic


def test_confidences_are_the_answer_tokens_probabilities_teacher_forced(tiny_predictor: OspreyPredictor) -> None:
    """Each generated token's log-probability equals one uncached forward pass over prompt + answer."""
    import torch

    from osprey_model.batched_generation import generate_regions
    from osprey_model.conversation import single_region_prompt
    from osprey_model.image_processing import masks_to_tensor

    image, masks = _frame(11, 3)
    frame = tiny_predictor.encode(image)
    model = tiny_predictor.model
    ids = tiny_predictor._checked_ids(single_region_prompt("short"), 6)
    mask_tensor = masks_to_tensor(masks, image.shape[:2])
    with torch.inference_mode():
        mask_tokens, pos_tokens = model.encode_regions(frame.features, 0, mask_tensor)
        outputs = {
            decode: generate_regions(
                model, frame.features, ids, mask_tokens, pos_tokens, max_new_tokens=6,
                eos_token_id=tiny_predictor.tokenizer.eos_token_id, decode=decode,
            )
            for decode in ("dynamic", "static")
        }  # fmt: skip
        for i, out in enumerate(outputs["dynamic"]):
            embeds, _ = model.splice(ids, frame.features.image_tokens[0], mask_tokens[i : i + 1], pos_tokens[i : i + 1])
            answer = torch.tensor(out.tokens)
            sequence = torch.cat([embeds, model.language_model.get_input_embeddings()(answer[:-1])])
            logits = model.language_model(inputs_embeds=sequence[None]).logits[0, len(embeds) - 1 :]
            expected = logits.float().log_softmax(-1).gather(-1, answer[:, None])[:, 0]
            np.testing.assert_allclose(out.logprobs, expected.numpy(), atol=1e-4)
            assert outputs["static"][i].tokens == out.tokens
            np.testing.assert_allclose(outputs["static"][i].logprobs, out.logprobs, atol=1e-4)
    scored = tiny_predictor.describe_scored(frame, masks, max_new_tokens=6)
    assert [a.text for a in scored] == tiny_predictor.describe(frame, masks, max_new_tokens=6)
    eos = tiny_predictor.tokenizer.eos_token_id
    for answer, out in zip(scored, outputs["dynamic"], strict=True):
        kept = [np.exp(lp) for t, lp in zip(out.tokens, out.logprobs, strict=True) if t != eos]
        assert 0.0 < answer.confidence <= 1.0 and answer.confidence == pytest.approx(np.mean(kept))


@pytest.mark.parametrize("count", [1, 3, 8])
@pytest.mark.parametrize("prompt", ["short", "detailed", "What colour is <region>?"])
def test_shared_prefix_decoding_gives_the_same_tokens(tiny_predictor: OspreyPredictor, count: int, prompt: str) -> None:
    """One prefix KV for all regions (no per-region copy), in one pass or in chunks: the same greedy tokens and
    log-probabilities as the replicated cache."""
    image, masks = _frame(20 + count, count)
    frame = tiny_predictor.encode(image)
    before, tiny_predictor.decode = tiny_predictor.decode, "dynamic"
    try:
        replicated = tiny_predictor.describe_scored(frame, masks, prompt=prompt, max_new_tokens=7)
        tiny_predictor.decode = "shared"
        shared = tiny_predictor.describe_scored(frame, masks, prompt=prompt, max_new_tokens=7)
        tiny_predictor.max_regions_per_pass = 2
        chunked = tiny_predictor.describe_scored(frame, masks, prompt=prompt, max_new_tokens=7)
    finally:
        tiny_predictor.decode, tiny_predictor.max_regions_per_pass = before, 0
    assert [a.text for a in shared] == [a.text for a in chunked] == [a.text for a in replicated]
    for a, b in zip(shared, replicated, strict=True):
        assert a.confidence == pytest.approx(b.confidence, abs=1e-5)


def test_shared_prefix_attention_equals_attention_over_the_concatenated_cache() -> None:
    """Grouped heads, several query positions: the two-part softmax against plain causal attention."""
    import torch

    from osprey_model.shared_prefix import shared_prefix_attention

    torch.manual_seed(0)
    batch, heads, kv_heads, prefix_len, suffix_len, q_len, dim = 3, 4, 2, 9, 5, 3, 8
    query = torch.randn(batch, heads, q_len, dim)
    prefix_k, prefix_v = torch.randn(1, kv_heads, prefix_len, dim), torch.randn(1, kv_heads, prefix_len, dim)
    suffix_k, suffix_v = torch.randn(batch, kv_heads, suffix_len, dim), torch.randn(batch, kv_heads, suffix_len, dim)
    out = shared_prefix_attention(query, prefix_k, prefix_v, suffix_k, suffix_v, dim**-0.5)
    keys = torch.cat([prefix_k.expand(batch, -1, -1, -1), suffix_k], 2).repeat_interleave(heads // kv_heads, 1)
    values = torch.cat([prefix_v.expand(batch, -1, -1, -1), suffix_v], 2).repeat_interleave(heads // kv_heads, 1)
    total = prefix_len + suffix_len
    allowed = torch.ones(q_len, total, dtype=torch.bool).tril(total - q_len)  # the last q positions, causal
    expected = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=allowed)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
