"""Many regions on one shared prompt prefix without copying its KV cache per region.

``generate_regions`` used to repeat the prefix's cache once per region: at 7B the ~1,100-token prefix is
~0.58 GB of KV in bf16, so 300 regions asked ~170 GB. Here the prefix's keys and values are kept once
(batch 1) and each region keeps only its own suffix's; attention reads both parts — one softmax over the
prefix scores and the suffix scores together — so memory grows by the suffix alone. The LLaMA decoder
layers are run explicitly (their own norms, projections, rotary embedding and MLP), only the attention
differs; greedy answers are token-identical to the replicated path (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb


@dataclass
class PrefixKV:
    """Per layer, the prefix's keys and values, (1, kv_heads, P, head_dim), stored once."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @classmethod
    def from_cache(cls, cache: DynamicCache) -> PrefixKV:
        keys, values = [], []
        for layer in cache.layers:
            assert layer.keys is not None and layer.values is not None  # filled by the prefill
            keys.append(layer.keys)
            values.append(layer.values)
        return cls(keys, values)

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]


@dataclass
class SuffixKV:
    """Per layer, each region's own keys and values after the prefix, (B, kv_heads, S, head_dim)."""

    keys: list[torch.Tensor | None] = field(default_factory=list)
    values: list[torch.Tensor | None] = field(default_factory=list)

    def append(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self.keys) <= layer:
            self.keys.append(None)
            self.values.append(None)
        old_keys, old_values = self.keys[layer], self.values[layer]
        self.keys[layer] = keys if old_keys is None else torch.cat([old_keys, keys], dim=2)
        self.values[layer] = values if old_values is None else torch.cat([old_values, values], dim=2)
        return self.keys[layer], self.values[layer]  # type: ignore[return-value]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (regions still generating)."""
        self.keys = [k[rows] if k is not None else None for k in self.keys]
        self.values = [v[rows] if v is not None else None for v in self.values]


def shared_prefix_attention(
    query: torch.Tensor,
    prefix_keys: torch.Tensor,
    prefix_values: torch.Tensor,
    suffix_keys: torch.Tensor,
    suffix_values: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """Causal attention of (B, H, q, D) queries — the last q of the suffix — over the shared prefix (every
    query sees all of it) and the region's own suffix; returns (B, H, q, D)."""
    heads, q_len = query.shape[1], query.shape[2]
    groups = heads // prefix_keys.shape[1]
    if groups > 1:  # grouped-query attention: one expanded copy of the prefix, not one per region
        prefix_keys, prefix_values = (t.repeat_interleave(groups, dim=1) for t in (prefix_keys, prefix_values))
        suffix_keys, suffix_values = (t.repeat_interleave(groups, dim=1) for t in (suffix_keys, suffix_values))
    prefix_scores = torch.einsum("bhqd,hkd->bhqk", query, prefix_keys[0]) * scaling
    suffix_scores = torch.matmul(query, suffix_keys.transpose(2, 3)) * scaling
    s_len = suffix_keys.shape[2]
    future = torch.ones(q_len, s_len, dtype=torch.bool, device=query.device).triu(s_len - q_len + 1)
    suffix_scores = suffix_scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(torch.cat([prefix_scores, suffix_scores], dim=-1).float(), dim=-1).to(query.dtype)
    prefix_len = prefix_scores.shape[-1]
    return torch.einsum("bhqk,hkd->bhqd", weights[..., :prefix_len], prefix_values[0]) + torch.matmul(
        weights[..., prefix_len:], suffix_values
    )


@torch.inference_mode()
def forward_on_prefix(
    lm: LlamaForCausalLM, inputs_embeds: torch.Tensor, start: int, prefix: PrefixKV, suffix: SuffixKV
) -> torch.Tensor:
    """The decoder over (B, q, C) new inputs at positions ``start``.. of every row; returns the last
    position's logits (B, vocab). ``suffix`` grows by q."""
    model = lm.model
    batch, q_len, _ = inputs_embeds.shape
    positions = torch.arange(start, start + q_len, device=inputs_embeds.device)[None]
    cos, sin = model.rotary_emb(inputs_embeds, positions)
    hidden = inputs_embeds
    for index, layer in enumerate(model.layers):
        attention = layer.self_attn
        x = layer.input_layernorm(hidden)
        shape = (batch, q_len, -1, attention.head_dim)
        query = attention.q_proj(x).view(shape).transpose(1, 2)
        keys = attention.k_proj(x).view(shape).transpose(1, 2)
        values = attention.v_proj(x).view(shape).transpose(1, 2)
        query, keys = apply_rotary_pos_emb(query, keys, cos, sin)
        suffix_keys, suffix_values = suffix.append(index, keys, values)
        out = shared_prefix_attention(
            query, prefix.keys[index], prefix.values[index], suffix_keys, suffix_values, attention.scaling
        )
        hidden = hidden + attention.o_proj(out.transpose(1, 2).reshape(batch, q_len, -1))
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return lm.lm_head(model.norm(hidden[:, -1:]))[:, -1]
