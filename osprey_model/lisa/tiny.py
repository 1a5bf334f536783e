"""A ``tiny`` LISA checkpoint in the released layout, and a tiny CLIP tower folder beside it, for tests.

Everything a released ``xinlai/LISA-7B-v1`` folder holds (config.json, sharded pickled ``.bin`` with the LLM
in bf16 and SAM in fp32, tokenizer with the added tokens at the released ids), at toy widths; the CLIP
tower is a folder of its own, a whole CLIP model (text tower too) as ``openai/clip-vit-large-patch14`` is.
The tokenizer is LLaMA-2's (the 32000-token vocabulary) from the ``wordllama`` wheel, so the added tokens
get the released ids.

``answer_chain`` wires the decoder as a chain of next-token rules (each token's embedding points at its
successor's output row; attention and MLP outputs are zeroed), so greedy decoding answers a known text
through the real code paths: for tests of what happens with one, two or no ``[SEG]`` when no trained LISA
is at hand. The mask a ``[SEG]`` gives is whatever the untrained head and SAM make of it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, PreTrainedTokenizerBase

from ..sam import build_sam, get_sam_preset
from ..tiny import llama2_tokenizer
from .config import LisaConfig, get_lisa_preset
from .modeling_lisa import LisaForCausalLM
from .predictor import clip_image_processor
from .prompting import IM_END, IM_START, SEG

# Added-token orders of the releases: LLaVA-7B-v1-1 already had the three image tokens, [SEG] came last;
# LLaVA's llama-2-13b-chat had none, [SEG] was added first.
TOKEN_MAPS = {"7b-v1": ("<im_patch>", IM_START, IM_END, SEG), "13b-llama2": (SEG, IM_START, IM_END)}
CLIP_FOLDER = "clip-vit-large-patch14"  # the release names the tower openai/clip-vit-large-patch14


def lisa_tokenizer(token_map: str = "7b-v1") -> PreTrainedTokenizerBase:
    tokenizer = llama2_tokenizer()
    for token in TOKEN_MAPS[token_map]:
        tokenizer.add_tokens([token], special_tokens=token != SEG)  # [SEG] is a plain added token, as released
    return tokenizer


def tiny_clip_config() -> CLIPVisionConfig:
    """ViT at 56 px with 14 px patches: 16 image tokens (the release: 224 px, 256 tokens)."""
    return CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=56, patch_size=14
    )


def wire_answer_chain(model: LisaForCausalLM, chain: list[int], seed: int = 0) -> None:
    """Make greedy decoding follow ``chain`` (token → next token, from the prompt's last token on)."""
    llm = model.language_model
    hidden = model.config.hidden_size
    generator = torch.Generator().manual_seed(seed)
    tokens = list(dict.fromkeys(chain))
    if len(tokens) > hidden:
        raise ValueError(f"a chain of {len(tokens)} distinct tokens needs hidden size >= that")
    basis = torch.linalg.qr(torch.randn(hidden, hidden, generator=generator))[0]
    direction = {token: basis[:, i] for i, token in enumerate(tokens)}
    with torch.no_grad():
        for layer in llm.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        llm.model.norm.weight.fill_(1.0)
        embeddings = llm.model.embed_tokens.weight
        for token in tokens:
            embeddings[token] = direction[token]
        for current, following in itertools.pairwise(chain):
            llm.lm_head.weight[following] += 20.0 * direction[current] / hidden**0.5


def create_tiny_lisa(
    out_dir: str | Path,
    seed: int = 0,
    *,
    token_map: str = "7b-v1",
    answer_chain: list[str] | None = None,
    sam_weights: str | Path | None = None,
    max_shard_bytes: int = 8 * 2**20,
) -> tuple[Path, Path]:
    """``out_dir/LISA-tiny`` (the checkpoint) and ``out_dir/clip-vit-large-patch14`` (the CLIP tower).

    ``answer_chain``: tokens (e.g. ``["▁Sure", ",", "[SEG]", ".", "</s>"]``) the model answers in order after
    any query; ``sam_weights``: a tiny SAM state dict for ``visual_model`` (default: random).
    """
    out_dir = Path(out_dir)
    model_dir, clip_dir = out_dir / "LISA-tiny", out_dir / CLIP_FOLDER
    torch.manual_seed(seed)
    tokenizer = lisa_tokenizer(token_map)
    config: LisaConfig = get_lisa_preset("tiny")
    config.vocab_size = len(tokenizer)
    clip_config = tiny_clip_config()
    config.mm_hidden_size = clip_config.hidden_size
    model = LisaForCausalLM(config, clip_config)
    if sam_weights is not None:
        from ..checkpoint_io import load_safetensors

        model.visual_model.load_state_dict({k: v.float() for k, v in load_safetensors(sam_weights).items()})
    else:
        model.visual_model.load_state_dict(build_sam(get_sam_preset("tiny")).state_dict())
    if answer_chain is not None:
        ids = [tokenizer.convert_tokens_to_ids(token) for token in answer_chain]
        prompt_end = tokenizer(" ASSISTANT:", add_special_tokens=False).input_ids[-1]
        wire_answer_chain(model, [prompt_end, *ids], seed)
    model.language_model.bfloat16()  # the released shards hold the LLM in bf16, SAM in fp32
    model.mm_projector.to(torch.bfloat16)
    model.save_pretrained(model_dir, safe_serialization=False, max_shard_bytes=max_shard_bytes)
    tokenizer.save_pretrained(model_dir)
    # The tower's folder is a whole CLIP model, as openai/clip-vit-large-patch14 is: text tower included.
    assert model.vision_tower is not None
    text = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    clip = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=clip_config.to_dict(), projection_dim=16))
    clip.vision_model.load_state_dict(model.vision_tower.vision_model.state_dict())
    clip.save_pretrained(clip_dir)
    clip_image_processor(None, clip_config.image_size).save_pretrained(clip_dir)
    return model_dir, clip_dir
