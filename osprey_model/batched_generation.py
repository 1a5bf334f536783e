"""Every region of a frame in one pass: a shared prefix prefilled once, region suffixes as one batch.

The released model asks one region per call and re-reads the whole ~1100-token prompt each time. Here the
prompt is split at the first ``<mask>``: the prefix (system prompt, image tokens, question text) is
identical for all regions and is prefilled once per frame and prompt, and its KV cache kept; the suffixes
(``<mask><pos>`` and the rest) differ only in the two region embeddings, so they are prefilled as one
batch on top of the shared cache, and all regions decode together with per-sequence stopping. Greedy
answers are token-identical to the one-region-per-call path.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, StaticCache

from .modeling_osprey import ImageFeatures, OspreyForCausalLM
from .shared_prefix import PrefixKV, SuffixKV, forward_on_prefix


@dataclass
class RegionTokens:
    """One region's answer: its new token ids and each one's log-probability under the model (before any
    temperature), the confidence a planner may weigh the answer by."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    def confidence(self, eos_token_id: int) -> float:
        """Mean probability of the answer's tokens (the end of sequence not counted); 0 for no token."""
        probs = [math.exp(lp) for t, lp in zip(self.tokens, self.logprobs, strict=True) if t != eos_token_id]
        return sum(probs) / len(probs) if probs else 0.0


def _chosen_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> list[float]:
    return logits.float().log_softmax(-1).gather(-1, tokens[:, None])[:, 0].tolist()


class PrefixCache:
    """KV caches of prompt prefixes per frame; a small LRU so a robot's memory stays bounded."""

    def __init__(self, max_entries: int = 4) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, tuple[int, ...]], tuple[ImageFeatures, DynamicCache]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, features: ImageFeatures, prefix_ids: tuple[int, ...]) -> DynamicCache | None:
        entry = self._entries.get((id(features), prefix_ids))
        if entry is None or entry[0] is not features:  # id() reuse after garbage collection
            self.misses += 1
            return None
        self._entries.move_to_end((id(features), prefix_ids))
        self.hits += 1
        return entry[1]

    def put(self, features: ImageFeatures, prefix_ids: tuple[int, ...], cache: DynamicCache) -> None:
        self._entries[(id(features), prefix_ids)] = (features, cache)  # holding features keeps id() unique
        self._entries.move_to_end((id(features), prefix_ids))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


@torch.inference_mode()
def generate_regions(
    model: OspreyForCausalLM,
    features: ImageFeatures,
    ids: torch.Tensor,
    mask_tokens: torch.Tensor,
    pos_tokens: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int,
    temperature: float = 0.0,
    prefix_cache: PrefixCache | None = None,
    decode: str = "dynamic",
    max_regions_per_pass: int = 0,
) -> list[RegionTokens]:
    """New token ids (and their log-probabilities) for each region; ``ids`` is a one-region prompt (exactly
    one ``<mask><pos>``).

    ``decode``: ``dynamic`` shrinks the batch as regions finish (best on CPU); ``static`` keeps a
    fixed-shape KV cache so a decode step has static shapes; ``static-compiled`` also runs the step
    through ``torch.compile(mode="reduce-overhead")``, i.e. CUDA graphs on a GPU; ``shared`` keeps the
    prefix's KV once for all regions (``shared_prefix.py``: memory grows by the suffixes only), decoding at
    most ``max_regions_per_pass`` regions at a time (0 = all) when even the suffixes must be bounded.
    """
    lm = model.language_model
    device = model.device
    ids = ids.to(device)
    mask_at = int(torch.eq(ids, model.region_token_ids[0]).nonzero()[0])
    prefix_ids, suffix_ids = ids[:mask_at], ids[mask_at:]
    count = len(mask_tokens)

    cache = prefix_cache.get(features, tuple(prefix_ids.tolist())) if prefix_cache else None
    if cache is None:
        prefix_embeds, _ = model.splice(prefix_ids, features.image_tokens[0], mask_tokens[:0], pos_tokens[:0])
        cache = DynamicCache()
        lm.model(inputs_embeds=prefix_embeds[None], past_key_values=cache, use_cache=True)  # no logits needed
        if prefix_cache is not None:
            prefix_cache.put(features, tuple(prefix_ids.tolist()), cache)
    suffix = torch.stack(
        [model.splice(suffix_ids, None, mask_tokens[i : i + 1], pos_tokens[i : i + 1])[0] for i in range(count)]
    )
    prefix_len = cache.get_seq_length()
    length = prefix_len + suffix.shape[1]
    budget = min(max_new_tokens, model.config.max_position_embeddings - length)
    if decode == "shared":  # the stored prefix is only read: no copy at all
        chunk = max_regions_per_pass or count
        prefix = PrefixKV.from_cache(cache)
        return [
            out
            for start in range(0, count, chunk)
            for out in _decode_shared(lm, prefix, suffix[start : start + chunk], budget, eos_token_id, temperature)
        ]
    cache = copy.deepcopy(cache)  # the stored prefix stays as it is for the next question
    cache.batch_repeat_interleave(count)
    # No padding anywhere (every row has the same length), so no attention mask: plain causal attention.
    logits = lm(inputs_embeds=suffix, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    if decode != "dynamic":
        return _decode_static(
            model, cache, logits, length, budget, eos_token_id, temperature, decode == "static-compiled"
        )

    def step(tokens: torch.Tensor) -> torch.Tensor:
        return lm(input_ids=tokens[:, None], past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]

    return _decode_rows(logits, budget, eos_token_id, temperature, step, cache.batch_select_indices)


def _decode_rows(
    logits: torch.Tensor,
    budget: int,
    eos_token_id: int,
    temperature: float,
    step: Callable[[torch.Tensor], torch.Tensor],
    keep_rows: Callable[[torch.Tensor], None],
) -> list[RegionTokens]:
    """Decoding with per-row stopping: finished regions leave the batch (``keep_rows`` drops them from the
    cache), so no more compute goes to them; ``step`` runs the live rows' new tokens."""
    outputs = [RegionTokens() for _ in range(len(logits))]
    active = torch.arange(len(logits), device=logits.device)  # rows of the batch still generating
    for index in range(budget):
        tokens = _pick(logits, temperature)
        for row, token, logprob in zip(active.tolist(), tokens.tolist(), _chosen_logprobs(logits, tokens), strict=True):
            outputs[row].tokens.append(token)
            outputs[row].logprobs.append(logprob)
        keep = tokens != eos_token_id
        if index == budget - 1 or not keep.any():
            break
        if not keep.all():
            rows = keep.nonzero().flatten()
            keep_rows(rows)
            active, tokens = active[rows], tokens[rows]
        logits = step(tokens)
    return outputs


def _decode_shared(
    lm, prefix: PrefixKV, suffix_embeds: torch.Tensor, budget: int, eos_token_id: int, temperature: float
) -> list[RegionTokens]:
    """The dynamic path's decoding on one shared prefix."""
    suffix = SuffixKV()
    logits = forward_on_prefix(lm, suffix_embeds, prefix.length, prefix, suffix)
    position = prefix.length + suffix_embeds.shape[1]
    embed = lm.get_input_embeddings()

    def step(tokens: torch.Tensor) -> torch.Tensor:
        nonlocal position
        position += 1
        return forward_on_prefix(lm, embed(tokens[:, None]), position - 1, prefix, suffix)

    return _decode_rows(logits, budget, eos_token_id, temperature, step, suffix.select)


def _decode_step(lm, tokens: torch.Tensor, cache: StaticCache, position: torch.Tensor) -> torch.Tensor:
    return lm(
        input_ids=tokens,
        past_key_values=cache,
        cache_position=position,
        position_ids=position[None].expand(len(tokens), -1),
        use_cache=True,
    ).logits[:, -1]


_compiled_steps: dict[int, Callable[..., torch.Tensor]] = {}


def _decode_static(
    model: OspreyForCausalLM,
    cache: DynamicCache,
    logits: torch.Tensor,
    length: int,
    budget: int,
    eos_token_id: int,
    temperature: float,
    compiled: bool,
) -> list[RegionTokens]:
    """Fixed batch and cache shapes: finished regions keep their row (their tokens are dropped)."""
    lm = model.language_model
    static = StaticCache(config=lm.config, max_cache_len=length + budget)
    filled = torch.arange(length, device=logits.device)
    for index, layer in enumerate(cache.layers):
        assert layer.keys is not None and layer.values is not None  # every layer was filled by the prefill
        static.update(layer.keys, layer.values, index, {"cache_position": filled})
    step_fn: Callable[..., torch.Tensor] = _decode_step
    if compiled:
        step_fn = _compiled_steps.setdefault(id(lm), torch.compile(_decode_step, mode="reduce-overhead"))
    outputs = [RegionTokens() for _ in range(len(logits))]
    done = torch.zeros(len(logits), dtype=torch.bool, device=logits.device)
    for step in range(budget):
        tokens = _pick(logits, temperature)
        logprobs = _chosen_logprobs(logits, tokens)
        for row in (~done).nonzero().flatten().tolist():
            outputs[row].tokens.append(int(tokens[row]))
            outputs[row].logprobs.append(logprobs[row])
        done |= tokens == eos_token_id
        if step == budget - 1 or done.all():
            break
        position = torch.tensor([length], device=logits.device)
        logits = step_fn(lm, tokens[:, None], static, position)
        length += 1
    return outputs


def _pick(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1).flatten()
