"""Greedy generation that gathers the hidden states SAM is prompted with, with a KV cache.

The released code generates without a cache (``use_cache=False``) and then reads the last step's hidden
states over the whole sequence, picking the position *before* each ``[SEG]`` (its mask is
``ids[:, 1:] == seg``): the final-norm state that predicted ``[SEG]``. With a cache that state is simply
the one of the step whose greedy token is ``[SEG]``, so it is gathered as decoding goes, one position per
step instead of the whole sequence again. ``seg_states_uncached`` is the released gather, kept to test
that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .modeling_lisa import LisaForCausalLM


@dataclass
class SegGeneration:
    tokens: list[int]  # the answer's ids, without the prompt (the end-of-sequence id included if reached)
    seg_states: torch.Tensor  # (N, hidden): the final-norm state that predicted each [SEG], in order


@torch.inference_mode()
def generate_with_seg(
    model: LisaForCausalLM,
    prompt_embeds: torch.Tensor,
    *,
    seg_token_id: int,
    eos_token_id: int,
    max_new_tokens: int,
) -> SegGeneration:
    """Greedy decoding of one prompt (L, hidden) with a KV cache, gathering ``[SEG]`` states on the way."""
    decoder, lm_head = model.language_model.model, model.language_model.lm_head
    embed = model.language_model.get_input_embeddings()
    cache = DynamicCache()
    inputs = prompt_embeds[None]
    position = 0
    tokens: list[int] = []
    seg_states = []
    for _ in range(max_new_tokens):
        positions = torch.arange(position, position + inputs.shape[1], device=inputs.device)[None]
        out = decoder(inputs_embeds=inputs, past_key_values=cache, use_cache=True, position_ids=positions)
        position += inputs.shape[1]
        state = out.last_hidden_state[0, -1]  # after the final norm, as hidden_states[-1] in the release
        token = int(lm_head(state).argmax())
        tokens.append(token)
        if token == seg_token_id:
            seg_states.append(state)
        if token == eos_token_id:
            break
        inputs = embed(torch.tensor([[token]], device=inputs.device))
    hidden = model.config.hidden_size
    states = torch.stack(seg_states) if seg_states else prompt_embeds.new_zeros((0, hidden))
    return SegGeneration(tokens=tokens, seg_states=states)


@torch.inference_mode()
def seg_states_uncached(
    model: LisaForCausalLM, prompt_embeds: torch.Tensor, answer: list[int], seg_token_id: int
) -> torch.Tensor:
    """The released gather: one forward over prompt + answer (without its last token, as the last generate
    step sees it); the final-norm states at the positions whose next token is ``[SEG]``."""
    embed = model.language_model.get_input_embeddings()
    ids = torch.tensor(answer, device=prompt_embeds.device)
    sequence = torch.cat([prompt_embeds, embed(ids[:-1]).to(prompt_embeds.dtype)])
    hidden = model.language_model.model(inputs_embeds=sequence[None], use_cache=False).last_hidden_state[0]
    before_seg = (ids == seg_token_id).nonzero().flatten() + len(prompt_embeds) - 1
    return hidden[before_seg]


@torch.inference_mode()
def generate_batch_with_seg(
    model: LisaForCausalLM,
    prompts: list[torch.Tensor],
    *,
    seg_token_id: int,
    eos_token_id: int,
    max_new_tokens: int,
) -> list[SegGeneration]:
    """Several prompts about one frame decoded together (left-padded, one KV cache, per-row stopping): on a
    GPU the decoder's weights are read once per step for all of them. Greedy answers equal one-by-one ones."""
    decoder, lm_head = model.language_model.model, model.language_model.lm_head
    embed = model.language_model.get_input_embeddings()
    rows, longest = len(prompts), max(len(p) for p in prompts)
    first = prompts[0]
    inputs = first.new_zeros((rows, longest, first.shape[-1]))
    attention = torch.zeros((rows, longest), dtype=torch.long, device=first.device)
    for i, prompt in enumerate(prompts):
        inputs[i, longest - len(prompt) :] = prompt
        attention[i, longest - len(prompt) :] = 1
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    cache = DynamicCache()
    tokens: list[list[int]] = [[] for _ in range(rows)]
    seg_states: list[list[torch.Tensor]] = [[] for _ in range(rows)]
    done = [False] * rows
    for _ in range(max_new_tokens):
        out = decoder(
            inputs_embeds=inputs,
            attention_mask=attention,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        states = out.last_hidden_state[:, -1]
        next_tokens = lm_head(states).argmax(-1).tolist()
        for i, token in enumerate(next_tokens):
            if done[i]:
                continue
            tokens[i].append(token)
            if token == seg_token_id:
                seg_states[i].append(states[i])
            done[i] = token == eos_token_id
        if all(done):
            break
        inputs = embed(torch.tensor(next_tokens, device=first.device)[:, None])
        attention = torch.cat([attention, attention.new_ones((rows, 1))], dim=1)
        positions = positions[:, -1:] + 1
    hidden = model.config.hidden_size
    return [
        SegGeneration(tokens=t, seg_states=torch.stack(s) if s else first.new_zeros((0, hidden)))
        for t, s in zip(tokens, seg_states, strict=True)
    ]
