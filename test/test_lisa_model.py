"""LISA in the model layer: the released checkpoint layout, the [SEG] gather with a KV cache, the predictor.

Checkpoints are written by the tests in the released layout (sharded pickled .bin, LLM in bf16, SAM in
fp32, LLaMA-2's 32000-token vocabulary with LISA's added tokens at the released ids) at toy widths; the 7B
model is only ever built on the meta device.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig

from osprey_model import FrameFeatures
from osprey_model.checkpoint_io import CheckpointError
from osprey_model.lisa import LisaConfig, LisaForCausalLM, LisaPredictor, get_lisa_preset
from osprey_model.lisa.generation import generate_batch_with_seg, generate_with_seg, seg_states_uncached
from osprey_model.lisa.modeling_lisa import own_name, released_name
from osprey_model.lisa.prompting import LisaTokens, tokenize_lisa_prompt
from osprey_model.lisa.tiny import create_tiny_lisa, lisa_tokenizer
from osprey_model.modeling_osprey import IMAGE_TOKEN_INDEX

SURE = ["▁Sure", ",", "[SEG]", ".", "</s>"]  # "Sure, [SEG]."
TWO = ["[SEG]", "▁and", "[SEG]"]  # a loop: [SEG] and [SEG] and ... until max_new_tokens
IMAGE = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def random_lisa(tmp_path_factory: pytest.TempPathFactory) -> LisaPredictor:
    model_dir, clip_dir = create_tiny_lisa(tmp_path_factory.mktemp("lisa-random"))
    return LisaPredictor.from_pretrained(model_dir, clip_dir)


@pytest.fixture(scope="module")
def sure_lisa(tmp_path_factory: pytest.TempPathFactory) -> LisaPredictor:
    model_dir, _ = create_tiny_lisa(tmp_path_factory.mktemp("lisa-sure"), answer_chain=SURE)
    return LisaPredictor.from_pretrained(model_dir)  # CLIP found beside the model, as config.json names it


def test_released_config_json_loads_and_round_trips(tmp_path: Path) -> None:
    released = {  # the fields of xinlai/LISA-7B-v1's config.json that matter
        "architectures": ["LISAForCausalLM"],
        "model_type": "llava",
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-06,
        "vocab_size": 32004,
        "mm_hidden_size": 1024,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": True,
        "mm_use_im_patch_token": False,
        "mm_vision_tower": "openai/clip-vit-large-patch14",
        "out_dim": 256,
        "train_mask_decoder": True,
        "use_mm_proj": True,
        "use_cache": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.31.0",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(released))
    config = LisaConfig.from_json_file(path)
    assert config == get_lisa_preset("lisa-7b")
    assert LisaConfig.from_dict(config.to_dict()) == config
    path.write_text(json.dumps({**released, "architectures": ["LlavaLlamaForCausalLM"]}))
    with pytest.raises(ValueError, match="not a LISA config"):
        LisaConfig.from_json_file(path)
    path.write_text('{"model_type": "llava", ')
    with pytest.raises(ValueError, match=r"not a valid LISA config.json"):
        LisaConfig.from_json_file(path)


def test_the_7b_model_has_the_released_key_names_and_shapes() -> None:
    """Built on the meta device: names and shapes only, no memory."""
    clip = CLIPVisionConfig(  # ViT-L/14 at 224 px
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14
    )
    with torch.device("meta"):
        model = LisaForCausalLM(get_lisa_preset("lisa-7b"), clip)
    state = model.released_state_dict()
    expected = {
        "model.embed_tokens.weight": (32004, 4096),
        "lm_head.weight": (32004, 4096),
        "model.layers.31.self_attn.q_proj.weight": (4096, 4096),
        "model.layers.0.mlp.gate_proj.weight": (11008, 4096),
        "model.norm.weight": (4096,),
        "model.mm_projector.weight": (4096, 1024),
        "model.mm_projector.bias": (4096,),
        "model.text_hidden_fcs.0.0.weight": (4096, 4096),
        "model.text_hidden_fcs.0.2.weight": (256, 4096),
        "model.visual_model.image_encoder.pos_embed": (1, 64, 64, 1280),
        "model.visual_model.image_encoder.blocks.0.attn.rel_pos_h": (27, 80),  # windowed
        "model.visual_model.image_encoder.blocks.7.attn.rel_pos_h": (127, 80),  # global
        "model.visual_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (2, 128),
        "model.visual_model.mask_decoder.iou_token.weight": (1, 256),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any("vision_tower" in key or "pixel_mean" in key for key in state)  # not in a LISA checkpoint
    assert sum(key.startswith("model.visual_model.") for key in state) == len(model.visual_model.state_dict())
    assert model.image_token_count == 256
    for name in model.state_dict():
        released = released_name(name)
        assert released is None or own_name(released) == name
    with pytest.raises(CheckpointError, match="unexpected key in LISA checkpoint"):
        own_name("visual_model.image_encoder.pos_embed")  # not a released name


def test_every_key_loads_from_a_released_layout_folder(tmp_path: Path) -> None:
    model_dir, clip_dir = create_tiny_lisa(tmp_path / "released")
    assert (
        len(list(model_dir.glob("pytorch_model-*-of-*.bin"))) >= 2
        and (model_dir / "pytorch_model.bin.index.json").is_file()
    )
    model = LisaForCausalLM.from_pretrained(model_dir, clip_dir)
    assert model.language_model.dtype == torch.float32  # bf16 shards loaded into the serving dtype
    model.save_pretrained(tmp_path / "saved")  # safetensors under the released names, no CLIP copy
    again = LisaForCausalLM.from_pretrained(tmp_path / "saved", clip_dir)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    reference = {k: v.clone() for k, v in model.released_state_dict().items()}
    model.load_released_state_dict({**reference, "model.layers.0.self_attn.rotary_emb.inv_freq": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"missing model.mm_projector.bias"):
        model.load_released_state_dict({k: v for k, v in reference.items() if k != "model.mm_projector.bias"})
    with pytest.raises(CheckpointError, match=r"unexpected model\.something_new\.weight"):
        model.load_released_state_dict({**reference, "model.something_new.weight": torch.zeros(1)})


def test_checkpoint_files_are_checked(tmp_path: Path) -> None:
    model_dir, clip_dir = create_tiny_lisa(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match=r"CLIP vision tower not found.*--clip"):
        LisaForCausalLM.from_pretrained(model_dir, tmp_path / "nowhere")
    shard = sorted(model_dir.glob("pytorch_model-*.bin"))[0]
    shard.write_bytes(b"\x80\x04\x95 not a state dict")
    with pytest.raises(CheckpointError, match="refusing to load"):
        LisaForCausalLM.from_pretrained(model_dir, clip_dir)
    with pytest.raises(FileNotFoundError, match=r"config.json not found"):
        LisaForCausalLM.from_pretrained(tmp_path / "empty")


@pytest.mark.parametrize(
    ("token_map", "ids"), [("7b-v1", (32001, 32002, 32003)), ("13b-llama2", (32001, 32002, 32000))]
)
def test_token_ids_per_release_and_the_prompt(token_map: str, ids: tuple[int, int, int]) -> None:
    tokenizer = lisa_tokenizer(token_map)
    tokens = LisaTokens.of(tokenizer)
    assert (tokens.im_start, tokens.im_end, tokens.seg) == ids
    prompt = tokenize_lisa_prompt(tokenizer, "  What is red here? Please output segmentation mask. ")
    assert prompt[0] == tokenizer.bos_token_id and prompt.count(tokenizer.bos_token_id) == 1
    start = prompt.index(IMAGE_TOKEN_INDEX)
    # "USER:" then <im_start> <image> <im_end> with no whitespace token between (the 4.31 tokenizer's way)
    assert prompt[start - 2 : start + 2] == [tokenizer.convert_tokens_to_ids(":"), ids[0], IMAGE_TOKEN_INDEX, ids[1]]
    assert tokenizer.decode(prompt[start + 2 :]) == "What is red here? Please output segmentation mask. ASSISTANT:"
    assert prompt[start + 2] == tokenizer.convert_tokens_to_ids("▁What")  # a piece of its own: the dummy prefix
    for bad in ("", "   ", "look at <image> please"):
        with pytest.raises(ValueError, match=r"empty query|may not contain"):
            tokenize_lisa_prompt(tokenizer, bad)


def test_question_first_is_the_checkpoints_order_and_the_released_one_is_the_default(tmp_path: Path) -> None:
    """The tiny shapes model reads the question before the image (LisaConfig.question_first); its config.json
    says so, and the predictor asks in the order the checkpoint was trained in."""
    tokenizer = lisa_tokenizer()
    tokens = LisaTokens.of(tokenizer)
    query = "Which shape is the colour of a lemon?"
    released = tokenize_lisa_prompt(tokenizer, query)
    first = tokenize_lisa_prompt(tokenizer, query, question_first=True)
    start = first.index(IMAGE_TOKEN_INDEX)
    assert first[start - 1 : start + 2] == [tokens.im_start, IMAGE_TOKEN_INDEX, tokens.im_end]
    assert tokenizer.decode(first[start + 2 :]) == "ASSISTANT:"
    assert tokenizer.decode(first[1 : start - 1]).endswith("USER: Which shape is the colour of a lemon?")
    assert first[: released.index(tokens.im_start)] == released[: released.index(tokens.im_start)]  # system
    assert sorted(first) == sorted(released)  # the same tokens, another order
    with pytest.raises(ValueError, match="may not contain"):
        tokenize_lisa_prompt(tokenizer, "look at <image>", question_first=True)

    assert "lisa_question_first" not in get_lisa_preset("tiny").to_dict()  # the released layout stays as it is
    model_dir, clip_dir = create_tiny_lisa(tmp_path)
    config = json.loads((model_dir / "config.json").read_text())
    assert LisaPredictor.from_pretrained(model_dir, clip_dir).prompt_ids(query, 8).tolist() == released
    (model_dir / "config.json").write_text(json.dumps({**config, "lisa_question_first": True}))
    predictor = LisaPredictor.from_pretrained(model_dir, clip_dir)
    assert predictor.model.config.question_first
    assert LisaConfig.from_dict(predictor.model.config.to_dict()).question_first
    assert predictor.prompt_ids(query, 8).tolist() == first
    assert 1 <= len(predictor.segment(IMAGE, query, max_new_tokens=4).tokens) <= 4  # and it answers in that order


def test_seg_states_gathered_with_the_cache_equal_the_released_uncached_gather(random_lisa: LisaPredictor) -> None:
    """Any token can play [SEG] for the gather: take one the random model does generate, several times."""
    model = random_lisa.model
    frame = random_lisa.frame(IMAGE)
    embeds = model.splice(random_lisa.prompt_ids("Where is it?", 16), frame.image_tokens)
    free = generate_with_seg(model, embeds, seg_token_id=-1, eos_token_id=-1, max_new_tokens=16)
    assert len(free.tokens) == 16 and len(free.seg_states) == 0
    token = max(set(free.tokens), key=free.tokens.count)
    gathered = generate_with_seg(model, embeds, seg_token_id=token, eos_token_id=-1, max_new_tokens=16)
    assert gathered.tokens == free.tokens  # gathering changes nothing about the answer
    released = seg_states_uncached(model, embeds, gathered.tokens, token)
    assert len(released) == free.tokens.count(token) >= 1
    torch.testing.assert_close(gathered.seg_states, released, atol=1e-4, rtol=1e-4)


def test_one_seg_gives_one_mask_at_the_image_size(sure_lisa: LisaPredictor) -> None:
    result = sure_lisa.segment(IMAGE, "Where is the red circle? Please output segmentation mask.", max_new_tokens=8)
    assert result.answer == "Sure, [SEG]."
    assert result.masks.shape == (1, 240, 320) and result.masks.dtype == bool and result.scores.shape == (1,)
    frame = sure_lisa.frame(IMAGE)  # the same mask straight from the model's own parts
    embeds = sure_lisa.model.splice(sure_lisa.prompt_ids("Where is the red circle?", 8), frame.image_tokens)
    state = seg_states_uncached(sure_lisa.model, embeds, result.tokens, sure_lisa.tokens.seg)
    with torch.inference_mode():
        low_res, _ = sure_lisa.segmenter.decode_prompt_embeddings(frame.sam, sure_lisa.model.seg_prompts(state))
    assert np.array_equal(sure_lisa.segmenter.upscale(frame.sam, low_res)[:, 0], result.masks)


def test_no_seg_in_the_answer_is_a_result_with_no_mask(sure_lisa: LisaPredictor) -> None:
    result = sure_lisa.segment(IMAGE, "Where is it?", max_new_tokens=2)  # stops after "Sure,"
    assert result.answer == "Sure," and result.masks.shape == (0, 240, 320) and len(result.scores) == 0


def test_several_seg_give_several_masks_in_order(tmp_path: Path) -> None:
    model_dir, _ = create_tiny_lisa(tmp_path, answer_chain=TWO)
    predictor = LisaPredictor.from_pretrained(model_dir)
    result = predictor.segment(IMAGE, "Segment both red shapes.", max_new_tokens=3)
    assert result.answer == "[SEG] and [SEG]" and len(result.masks) == 2
    frame = predictor.frame(IMAGE)
    embeds = predictor.model.splice(predictor.prompt_ids("Segment both red shapes.", 3), frame.image_tokens)
    states = seg_states_uncached(predictor.model, embeds, result.tokens, predictor.tokens.seg)
    alone = []
    for i in range(2):  # mask i comes from the state before the i-th [SEG]
        with torch.inference_mode():
            prompt = predictor.model.seg_prompts(states[i : i + 1])
            low_res, iou = predictor.segmenter.decode_prompt_embeddings(frame.sam, prompt)
        alone.append((low_res, float(iou[0, 0])))
        mask = predictor.segmenter.upscale(frame.sam, low_res)[0, 0]
        assert (mask != result.masks[i]).mean() < 1e-3  # decoded in one batch: equal up to float ties
        assert result.scores[i] == pytest.approx(alone[i][1], abs=1e-4)
    assert not torch.allclose(alone[0][0], alone[1][0])  # two different prompts: a swap would show
    assert alone[0][1] != pytest.approx(alone[1][1], abs=1e-3)


def test_a_frame_is_encoded_once_for_several_queries(sure_lisa: LisaPredictor, monkeypatch) -> None:
    calls = []
    for name in ("encode_clip",):
        original = getattr(sure_lisa, name)
        monkeypatch.setattr(sure_lisa, name, lambda rgb, original=original: calls.append(1) or original(rgb))
    features = FrameFeatures(IMAGE)
    first = sure_lisa.segment(features, "Where is the cup?")
    second = sure_lisa.segment(features, "Where can I sit?")
    assert calls == [1] and sorted(features.encoded()) == ["lisa-clip", "lisa-sam"]
    assert first.answer == second.answer == "Sure, [SEG]."


def test_bad_queries_are_refused_before_any_encoding(sure_lisa: LisaPredictor) -> None:
    features = FrameFeatures(IMAGE)
    with pytest.raises(ValueError, match="empty query"):
        sure_lisa.segment(features, "  ")
    with pytest.raises(ValueError, match="query is too long"):
        sure_lisa.segment(features, "where " * 400, max_new_tokens=1600)
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        sure_lisa.segment(features, "where?", max_new_tokens=0)
    assert features.encoded() == []


def test_bf16_keeps_rotary_frequencies_and_sams_prompt_encoder_in_fp32(tmp_path: Path) -> None:
    model_dir, clip_dir = create_tiny_lisa(tmp_path)  # random weights: attention and the MLPs at work
    fp32 = LisaPredictor.from_pretrained(model_dir, clip_dir)
    bf16 = LisaPredictor.from_pretrained(model_dir, clip_dir, dtype=torch.bfloat16)
    model = bf16.model
    assert model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert model.visual_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.dtype == torch.float32
    assert model.visual_model.pixel_mean.dtype == torch.float32 and model.visual_model.pixel_mean[0] == 123.675
    assert model.mm_projector.weight.dtype == torch.bfloat16
    answer = fp32.segment(IMAGE, "Where is it?", max_new_tokens=12).tokens
    token = max(set(answer), key=answer.count)  # gather at a token the answer holds, from the same answer
    states = []
    for predictor in (fp32, bf16):
        frame = predictor.frame(IMAGE)
        embeds = predictor.model.splice(predictor.prompt_ids("Where is it?", 12), frame.image_tokens)
        states.append(seg_states_uncached(predictor.model, embeds, answer, token).float())
    cosine = torch.nn.functional.cosine_similarity(states[0], states[1], dim=-1)
    assert cosine.min() > 0.99, cosine  # bf16's states are fp32's to within rounding, 12+ positions in


def test_several_queries_about_one_frame_in_one_batch_answer_as_one_at_a_time(random_lisa: LisaPredictor) -> None:
    queries = ["Where is it?", "Which object could hold water? Please output segmentation mask.", "Find the cup."]
    model = random_lisa.model
    frame = random_lisa.frame(IMAGE)
    prompts = [model.splice(random_lisa.prompt_ids(q, 10), frame.image_tokens) for q in queries]
    alone = [generate_with_seg(model, p, seg_token_id=-1, eos_token_id=-1, max_new_tokens=10) for p in prompts]
    token = alone[1].tokens[3]  # a token the model does generate plays [SEG], so states are gathered in the batch
    alone = [generate_with_seg(model, p, seg_token_id=token, eos_token_id=-1, max_new_tokens=10) for p in prompts]
    batched = generate_batch_with_seg(model, prompts, seg_token_id=token, eos_token_id=-1, max_new_tokens=10)
    assert [b.tokens for b in batched] == [a.tokens for a in alone]  # prompts of different lengths, left-padded
    for a, b in zip(alone, batched, strict=True):
        torch.testing.assert_close(b.seg_states, a.seg_states, atol=1e-4, rtol=1e-4)
    results = random_lisa.segment_many(IMAGE, queries, max_new_tokens=10)
    assert [r.answer for r in results] == [random_lisa.segment(IMAGE, q, max_new_tokens=10).answer for q in queries]
    stop = alone[0].tokens[4]  # a token of the first answer ends it there, the others go on
    early = generate_batch_with_seg(model, prompts, seg_token_id=token, eos_token_id=stop, max_new_tokens=10)
    assert early[0].tokens == alone[0].tokens[:5]
    for a, b in zip(alone[1:], early[1:], strict=True):
        cut = a.tokens.index(stop) + 1 if stop in a.tokens else len(a.tokens)
        assert b.tokens == a.tokens[:cut]


def test_every_answer_of_a_batch_gets_its_own_masks(sure_lisa: LisaPredictor) -> None:
    queries = ["Where is the cup?", "Where can I sit? Please output segmentation mask."]
    batch = sure_lisa.segment_many(IMAGE, queries, max_new_tokens=3)  # "Sure,", then [SEG] for both
    one = [sure_lisa.segment(IMAGE, q, max_new_tokens=3) for q in queries]
    for b, o in zip(batch, one, strict=True):
        assert b.answer == o.answer == "Sure, [SEG]" and len(b.masks) == len(o.masks) == 1
        assert b.scores[0] == pytest.approx(o.scores[0], abs=1e-4)
    short = sure_lisa.segment_many(IMAGE, queries[:1] + queries[1:], max_new_tokens=2)
    assert [len(r.masks) for r in short] == [0, 0]


def test_the_llama2_13b_token_map_loads_and_segments(tmp_path: Path) -> None:
    model_dir, clip_dir = create_tiny_lisa(tmp_path, token_map="13b-llama2", answer_chain=SURE)
    predictor = LisaPredictor.from_pretrained(model_dir, clip_dir)
    assert predictor.tokens.seg == 32000 and predictor.model.config.vocab_size == 32003
    result = predictor.segment(IMAGE, "Where is the red circle?", max_new_tokens=8)
    assert result.answer == "Sure, [SEG]." and len(result.masks) == 1
