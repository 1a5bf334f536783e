"""Can a language model trained from scratch find the shape a query means among the image tokens?

    python -m training.lisa.lookup_probe --tower work/tiny-lisa/clip/clip_tower.safetensors --out probe.json
    python -m training.lisa.lookup_probe --tower ... --question-first --out probe-question-first.json

The tiny LISA's chain fails at one step (training/README.md, LISA): while generating, its LLM does not
point at the shape the query means. This probe isolates that step, without SAM or text generation. The tiny
LISA's LLM (4 layers, 128 wide, from nothing) reads a frozen tower's patch tokens and a colour query
("Which shape is the colour of a lemon?", "Segment the yellow star.") and regresses the target's innermost
point from its last state. It reports the mean distance (the frame's width and height are 1) on held-out
scenes, beside the mean predictor's. The released order puts the image before the question, so the last
state must match the colour it read against every image token (a lookup whose key depends on the query).
``--question-first`` puts the question first, so each image token can compare itself with the colour
already read, and the last state only gathers the tokens that matched.

Words are the probe's vocabulary (one id per lower-cased word): the question is whether the lookup is
learned, not how the tokenizer splits "aubergine".
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm
from transformers import CLIPImageProcessor, CLIPVisionModel, LlamaConfig, LlamaModel

from osprey_model.shapes_queries import innermost_point

from ..shapes_world import HEIGHT, WIDTH
from ..train_tiny_lisa import frozen_patch_states, tiny_clip_config, tiny_image_processor
from .shapes_data import shapes_sample


@dataclass
class LookupSet:
    """Samples with their tower features computed once: the tower is frozen, so steps only run the LLM."""

    features: torch.Tensor  # (N, P, tower width)
    queries: list[str]
    points: torch.Tensor  # (N, 2): the target's innermost point, x / width and y / height
    kinds: list[str]


def lookup_set(
    tower: CLIPVisionModel, processor: CLIPImageProcessor, count: int, seed: int, held_out: bool, kinds: list[str]
) -> LookupSet:
    rng = np.random.default_rng(seed)
    samples = [shapes_sample(rng, held_out=held_out, kind=kinds[i % len(kinds)]) for i in range(count)]
    points = [innermost_point(s.targets[0]) for s in samples]
    return LookupSet(
        features=frozen_patch_states(tower, processor, [s.image for s in samples]),
        queries=[s.query.query for s in samples],
        points=torch.tensor([[x / WIDTH, y / HEIGHT] for x, y in points]),
        kinds=[s.query.kind for s in samples],
    )


class WordVocabulary:
    """One id per lower-cased word or punctuation mark, 0 kept for padding; unseen words get new ids (their
    embeddings stay untrained, as an unseen phrasing's would)."""

    def __init__(self, size: int = 2000) -> None:
        self.size = size
        self.ids: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        words = re.findall(r"\w+|[^\w\s]", text.lower())
        return [self.ids.setdefault(word, min(len(self.ids) + 1, self.size - 1)) for word in words]


class LookupProbe(nn.Module):
    def __init__(self, tower_width: int, hidden: int = 128, layers: int = 4, heads: int = 4) -> None:
        super().__init__()
        config = LlamaConfig(
            vocab_size=2000, hidden_size=hidden, intermediate_size=344, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=512,
        )  # fmt: skip
        self.projector = nn.Linear(tower_width, hidden)
        self.llm = LlamaModel(config)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, features: torch.Tensor, token_ids: list[list[int]], question_first: bool) -> torch.Tensor:
        """Image tokens and question (left-padded, so every sequence ends at the same place) → (B, 2) points."""
        length = max(len(ids) for ids in token_ids)
        padded = torch.tensor([[0] * (length - len(ids)) + ids for ids in token_ids])
        text = self.llm.embed_tokens(padded)
        text_mask = padded > 0
        image = self.projector(features)
        image_mask = torch.ones(image.shape[:2], dtype=torch.bool)
        if question_first:
            embeds, mask = torch.cat([text, image], 1), torch.cat([text_mask, image_mask], 1)
        else:
            embeds, mask = torch.cat([image, text], 1), torch.cat([image_mask, text_mask], 1)
        return self.head(self.llm(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state[:, -1])


def distances(probe: LookupProbe, data: LookupSet, vocabulary: WordVocabulary, question_first: bool) -> torch.Tensor:
    with torch.no_grad():
        ids = [vocabulary.encode(q) for q in data.queries]
        return (probe(data.features, ids, question_first) - data.points).norm(dim=1)


def train_probe(
    train: LookupSet,
    evaluation: dict[str, LookupSet],
    *,
    question_first: bool,
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    eval_every: int = 250,
    seed: int = 0,
) -> list[dict[str, float]]:
    """AdamW with a 50-step warm-up and clipping at 1; rows of held-out mean distances every ``eval_every``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    probe, vocabulary = LookupProbe(train.features.shape[-1]), WordVocabulary()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=learning_rate, weight_decay=0.0)
    rows, start = [], time.monotonic()
    for step in tqdm(range(steps + 1), desc="lookup probe"):
        if step % eval_every == 0 or step == steps:
            row = {"step": step, "seconds": round(time.monotonic() - start, 1)}
            for name, data in evaluation.items():
                distance = distances(probe, data, vocabulary, question_first)
                row[f"{name}_distance"] = round(float(distance.mean()), 4)
                row[f"{name}_within_0.08"] = round(float((distance < 0.08).float().mean()), 3)
            rows.append(row)
        if step == steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * min(1.0, (step + 1) / 50)
        batch = rng.integers(len(train.queries), size=batch_size)
        ids = [vocabulary.encode(train.queries[i]) for i in batch]
        loss = F.mse_loss(probe(train.features[batch], ids, question_first), train.points[batch])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
        optimizer.step()
    return rows


def mean_predictor_distance(train: LookupSet, data: LookupSet) -> float:
    return float((data.points - train.points.mean(0)).norm(dim=1).mean())


def tower_image_size(state: dict[str, torch.Tensor], patch_size: int) -> int:
    """The input size a tower was trained at, read off its position embeddings (one per patch, plus CLS)."""
    patches = state["vision_model.embeddings.position_embedding.weight"].shape[0] - 1
    return round(patches**0.5) * patch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tower", type=Path, required=True, help="clip_tower.safetensors of the clip stage")
    parser.add_argument("--question-first", action="store_true")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--train-samples", type=int, default=3800)
    parser.add_argument("--eval-samples", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="JSON with the settings and the rows")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    state = load_file(args.tower)
    config = tiny_clip_config()
    config.image_size = tower_image_size(state, config.patch_size)
    tower = CLIPVisionModel(config).eval()
    tower.load_state_dict(state)
    processor = tiny_image_processor(config.image_size)
    train = lookup_set(tower, processor, args.train_samples, 0, False, ["colour", "name"])
    evaluation = {
        "held_out_colour": lookup_set(tower, processor, args.eval_samples, 99, True, ["colour"]),
        "name": lookup_set(tower, processor, args.eval_samples, 98, False, ["name"]),
    }
    rows = train_probe(
        train, evaluation, question_first=args.question_first, steps=args.steps, learning_rate=args.learning_rate
    )
    baselines = {name: round(mean_predictor_distance(train, data), 4) for name, data in evaluation.items()}
    result = {
        "settings": {key: str(value) for key, value in vars(args).items()},
        "mean_predictor_distance": baselines,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"mean_predictor_distance": baselines, "last": rows[-1]}))


if __name__ == "__main__":
    main()
