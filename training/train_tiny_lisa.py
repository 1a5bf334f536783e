"""Train the embedded tiny LISA on the shapes world: a query that names no shape in, the meant shape's mask out.

    python -m training.train_tiny_lisa --out work/tiny-lisa

A curriculum, since a toy LLM → ``[SEG]`` → SAM chain trained end to end from scratch learns to segment every
shape at once and stays there (``sam-and-evaluation-facts.md``). Each stage is a ``TrainingLoop`` with its own
``metrics.csv`` under ``--out``:

1. ``clip``: the CLIP tower. The released one is pretrained; ours learns the shapes world from per-patch
   labels (the colour and the kind of shape seen there, and where the patch is: attention moves values, not
   positions, so a language model can only say where a shape is if the image tokens carry it), read at the
   layer LLaVA uses (second-to-last).
2. ``click``: SAM's mask decoder, starting from the shipped tiny SAM (trained on points and boxes), learns
   one-token prompts — a click's embedding alone, the form a ``[SEG]`` prompt has.
3. ``answer``: the LLM and projector learn the answers' text from a pool of scenes whose tower features are
   computed once — no SAM, so a step is cheap, and the lookup of the meant shape among the image tokens gets
   the thousands of steps it needs. The prompt puts the question before the image (``--prompt-order``): in
   the released order a 4-layer LLM trained from nothing does not learn that lookup on a CPU
   (``training.lisa.lookup_probe``).
4. ``ground``: the LLM, projector, ``text_hidden_fcs`` and SAM's mask decoder (LISA starts from a trained
   LLaVA; ours starts from nothing) learn to answer — naming the meant shape and its coarse place, then
   ``[SEG]`` — and to make each ``[SEG]`` prompt a click deep inside that shape: text CE + the released mask
   loss + a regression onto the click's embedding; SAM's encoder frozen.
5. ``lisa``: the released recipe — LoRA r=8 on q/v, ``embed_tokens``, ``lm_head``, ``text_hidden_fcs`` and
   the mask decoder; CE ×1 + BCE ×2 + Dice ×0.5; AdamW 3e-4, WarmupDecayLR with 100 warm-up steps.

Then validation queries (their own seed range, training's phrasings) choose whether the ground stage's weights
or the released stage's ship (``--validation-per-kind``): the card's held-out set never decides.

The result is a released-layout folder (``LISA-tiny``) and its CLIP tower's own folder beside it; the card's
figures come from ``python -m training.lisa_card``.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
)

from osprey_model.image_processing import CLIP_MEAN, CLIP_STD
from osprey_model.lisa import LisaForCausalLM, LisaPredictor
from osprey_model.lisa.config import LisaConfig
from osprey_model.lisa.prompting import IM_END, IM_START, SEG
from osprey_model.sam import SamSegmenter, load_sam
from osprey_model.shapes import CATEGORIES, COLOURS
from osprey_model.shapes_queries import innermost_point

from .lisa.losses import mask_bce, mask_dice
from .lisa.recipe import Sample, answer_logits, answer_states, make_sample
from .lisa.shapes_data import VALIDATION_SEED, answer_token_classes, corpus, shapes_sample
from .lisa.trainer import LisaItem, LisaTrainConfig, LisaTrainer
from .loop import METRICS_FILE, TrainingLoop
from .shapes_world import scene
from .streams import SeededBatches, SeededStream
from .tokenizer import train_tokenizer

MODEL_FOLDER, CLIP_FOLDER = "LISA-tiny", "clip-vit-tiny-shapes"
CLIP_IMAGE_SIZE, CLIP_PATCH = 112, 14
ANSWER_WEIGHTS, FIT_REPORT = "answer_llm.safetensors", "answer_fit.json"
CLIP_HEADS = "clip_heads.safetensors"  # in the clip stage's checkpoints only
RECIPE_TOKENIZER = Path(__file__).resolve().parent / "lisa" / "tiny_tokenizer"  # the shipped model's ids
TINY_SAM = Path(__file__).resolve().parents[1] / "osprey_model/checkpoints/tiny-sam/sam_tiny.safetensors"


def tiny_clip_config(width: int = 64, layers: int = 4) -> CLIPVisionConfig:
    """ViT/14 as ViT-L/14, but at 112 px: 64 image tokens (the release: 256), which a 4-layer LLM learns to
    search in far fewer steps."""
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=CLIP_IMAGE_SIZE,
        patch_size=CLIP_PATCH,
    )


def tiny_image_processor(size: int = CLIP_IMAGE_SIZE) -> CLIPImageProcessor:
    """CLIP's normalisation, the whole frame squashed to a square (no centre crop: no shape is cut away)."""
    return CLIPImageProcessor(
        size={"height": size, "width": size},
        do_center_crop=False,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


def tiny_lisa_config(vocab_size: int, question_first: bool = True, vision_width: int = 64) -> LisaConfig:
    """4 x 128 LLaMA. ``question_first``: the question before the image (not the released order; see
    ``LisaConfig.question_first``)."""
    return LisaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        mm_vision_tower=CLIP_FOLDER,
        mm_hidden_size=vision_width,
        sam_preset="tiny",
        question_first=question_first,
    )


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A new BPE tokenizer for the shapes world's text. ``tokenizers``' BPE trainer breaks ties between equally
    frequent merges in hash-map order, which was seen to differ from one machine or day to the next (the same
    tokens, other ids), and every id a model learns follows it."""
    tokenizer = train_tokenizer(corpus(), vocab_size=400, region_tokens=False)
    tokenizer.add_tokens([IM_START, IM_END], special_tokens=True)
    tokenizer.add_tokens([SEG])  # a plain added token, as released
    return tokenizer


def run_tokenizer(folder: Path, source: Path | None = RECIPE_TOKENIZER) -> PreTrainedTokenizerFast:
    """The run's tokenizer, kept in ``folder`` so that a stage reloaded after a crash reads the ids it was
    trained with. It is the recipe's fixed one (``source``), as LISA takes LLaVA's: the shipped model's, so
    that the command reproduces that model; ``source=None`` trains a new one (``build_tokenizer``)."""
    if source is not None and not (source / "tokenizer.json").is_file():
        raise ValueError(f"no tokenizer.json in {source}")
    if (folder / "tokenizer.json").is_file():
        kept = PreTrainedTokenizerFast.from_pretrained(str(folder))
        if source is not None and kept.get_vocab() != PreTrainedTokenizerFast.from_pretrained(str(source)).get_vocab():
            raise ValueError(
                f"{folder} holds another tokenizer than {source}, which this run asks for: the stages kept in "
                "its run folder were trained on other ids; use another --out"
            )
        return kept
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(source)) if source is not None else build_tokenizer()
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def patch_states(tower: CLIPVisionModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """The image tokens LLaVA reads: the second-to-last layer's states, CLS dropped (the model's own is
    ``LisaForCausalLM.clip_features``)."""
    return tower(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]


@torch.no_grad()
def frozen_patch_states(
    tower: CLIPVisionModel, processor: CLIPImageProcessor, images: list[np.ndarray], chunk: int = 64
) -> torch.Tensor:
    """``patch_states`` of many images at once, for stages that cache a frozen tower's output."""
    features = []
    for start in range(0, len(images), chunk):
        pixels = processor(images=images[start : start + chunk], return_tensors="pt", input_data_format="channels_last")
        features.append(patch_states(tower, pixels["pixel_values"]))
    return torch.cat(features)


def scene_batches(rng: np.random.Generator, size: int) -> Iterator[list]:
    """Endless batches of fresh shapes-world scenes (image, visible masks, full masks, shapes)."""
    while True:
        yield [scene(rng, overlap=float(rng.uniform(0.0, 0.6))) for _ in range(size)]


# ---- stage 1: the CLIP tower ------------------------------------------------------------------------------
def patch_labels(masks: list[np.ndarray], shapes, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Per patch of the squashed frame: the colour and the kind of the shape covering most of it (0 = none)."""
    stack = torch.from_numpy(np.stack([~np.logical_or.reduce(masks), *masks])).float()[None]
    cover = F.adaptive_avg_pool2d(stack, grid)[0].argmax(0).numpy()  # 0 = background, k + 1 = shape k
    colour = np.array([0] + [1 + list(COLOURS).index(s.colour) for s in shapes])[cover]
    category = np.array([0] + [1 + CATEGORIES.index(s.category) for s in shapes])[cover]
    return colour, category


class ClipPretraining(SeededBatches, TrainingLoop):
    def __init__(
        self,
        tower: CLIPVisionModel,
        out: Path,
        steps: int,
        batch_size: int,
        seed: int,
        kind_weight: float = 1.0,
        learning_rate: float = 1e-3,
        kind_on_shapes_only: bool = True,
        save_every: int = 0,
    ) -> None:
        width, grid = tower.config.hidden_size, tower.config.image_size // tower.config.patch_size
        self.tower, self.grid, self.batch_size, self.kind_weight = tower, grid, batch_size, kind_weight
        self.kind_on_shapes_only = kind_on_shapes_only
        self.heads = nn.ModuleDict(
            {
                "colour": nn.Linear(width, len(COLOURS) + 1),
                "kind": nn.Linear(width, len(CATEGORIES) + 1),
                "row": nn.Linear(width, grid),
                "column": nn.Linear(width, grid),
            }
        )
        self.processor, self.rng = tiny_image_processor(), np.random.default_rng(seed)
        params = [*tower.parameters(), *self.heads.parameters()]
        super().__init__(
            tower, params, out, name="clip", total_steps=steps, learning_rate=learning_rate, warmup_steps=50,
            save_every=save_every,
        )  # fmt: skip

    def batches(self) -> Iterator[list]:
        return scene_batches(self.rng, self.batch_size)

    def compute_loss(self, batch: list) -> tuple[torch.Tensor, dict[str, float]]:
        images = [image for image, *_ in batch]
        labels = [patch_labels(visible, shapes, self.grid) for _, visible, _, shapes in batch]
        pixels = self.processor(images=images, return_tensors="pt", input_data_format="channels_last")
        states = patch_states(self.tower, pixels["pixel_values"])
        colour = torch.as_tensor(np.stack([c for c, _ in labels])).flatten(1)
        kind = torch.as_tensor(np.stack([k for _, k in labels])).flatten(1)
        index = torch.arange(self.grid * self.grid).expand(len(batch), -1)
        targets = {"colour": colour, "kind": kind, "row": index // self.grid, "column": index % self.grid}
        losses = {
            name: F.cross_entropy(self.heads[name](states).flatten(0, 1), target.flatten())
            for name, target in targets.items()
            if name != "kind"
        }
        # A shape's kind is learned where there is one: a few patches, drowned by the background otherwise
        # (the kind term over all patches, "none" included, is how the shipped tiny LISA's tower was trained).
        counted = kind > 0 if self.kind_on_shapes_only else torch.ones_like(kind, dtype=torch.bool)
        losses["kind"] = F.cross_entropy(self.heads["kind"](states)[counted], kind[counted])
        weights = {"kind": self.kind_weight}  # the other terms weigh 1
        total = sum((weights.get(name, 1.0) * loss for name, loss in losses.items()), torch.zeros(()))
        return total, {name: loss.item() for name, loss in losses.items()}

    def save_model(self, target: Path, final: bool) -> None:
        save_file({k: v.contiguous() for k, v in self.tower.state_dict().items()}, target / "clip_tower.safetensors")
        if not final:  # the heads only train the tower, but a resume must go on with them as they were
            save_file(self.heads.state_dict(), target / CLIP_HEADS)

    def load_model(self, checkpoint: Path) -> None:
        self.tower.load_state_dict(load_file(checkpoint / "clip_tower.safetensors"))
        if (checkpoint / CLIP_HEADS).is_file():
            self.heads.load_state_dict(load_file(checkpoint / CLIP_HEADS))


def click_embedding(
    segmenter: SamSegmenter, image_hw: tuple[int, int], points: list[tuple[float, float]]
) -> torch.Tensor:
    """SAM's sparse embedding (N, 256) of one positive click per point, without the padding token: what a
    ``[SEG]`` prompt is, one token."""
    coords = segmenter.transform.apply_coords(np.asarray(points, np.float32), image_hw)
    coords_t = torch.as_tensor(coords, device=segmenter.device)[:, None]
    labels = torch.ones(coords_t.shape[:2], device=segmenter.device)
    with torch.no_grad():
        return segmenter.sam.prompt_encoder._embed_points(coords_t, labels, pad=False)[:, 0]


# ---- stage 2: one-token clicks for SAM's decoder -----------------------------------------------------------
class ClickPretraining(SeededBatches, TrainingLoop):
    def __init__(
        self, segmenter: SamSegmenter, out: Path, steps: int, batch_size: int, seed: int, save_every: int = 0
    ) -> None:
        self.segmenter, self.batch_size, self.rng = segmenter, batch_size, np.random.default_rng(seed)
        decoder = segmenter.sam.mask_decoder
        super().__init__(
            decoder, list(decoder.parameters()), out, name="click", total_steps=steps, learning_rate=3e-4,
            warmup_steps=20, save_every=save_every,
        )  # fmt: skip

    def batches(self) -> Iterator[list]:
        return scene_batches(self.rng, self.batch_size)

    def compute_loss(self, batch: list) -> tuple[torch.Tensor, dict[str, float]]:
        bce, dice = [], []
        for image, visible, _, _ in batch:
            frame = self.segmenter.encode(image)
            frame.embedding = frame.embedding.clone()
            masks = [m for m in visible if m.sum() >= 30]
            points = []
            for mask in masks:  # a click anywhere on the shape
                ys, xs = np.nonzero(mask)
                i = int(self.rng.integers(len(xs)))
                points.append((float(xs[i]), float(ys[i])))
            prompts = click_embedding(self.segmenter, frame.image_hw, points)
            low_res, _ = self.segmenter.decode_prompt_embeddings(frame, prompts)
            logits = self.segmenter.sam.postprocess_masks(low_res, frame.input_hw, frame.image_hw)[:, 0]
            target = torch.as_tensor(np.stack(masks)).long()
            bce.append(mask_bce(logits, target))
            dice.append(mask_dice(logits, target))
        bce_loss, dice_loss = torch.cat(bce).mean(), torch.cat(dice).mean()
        return 2.0 * bce_loss + 0.5 * dice_loss, {"bce": bce_loss.item(), "dice": dice_loss.item()}

    def save_model(self, target: Path, final: bool) -> None:
        state = self.segmenter.sam.mask_decoder.state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, target / "mask_decoder.safetensors")

    def load_model(self, checkpoint: Path) -> None:
        self.segmenter.sam.mask_decoder.load_state_dict(load_file(checkpoint / "mask_decoder.safetensors"))


# ---- stage 3: answers, read off cached tower features --------------------------------------------------------
class AnswerPretraining(SeededBatches, TrainingLoop):
    """The LLM and projector learn the answers' text (which shape, roughly where) from a pool of scenes whose
    frozen tower features are computed once: no SAM, so a step costs a tenth of a ground step, and the lookup
    gets the many steps it needs before the chain is trained."""

    def __init__(
        self,
        model: LisaForCausalLM,
        tokenizer: PreTrainedTokenizerFast,
        out: Path,
        steps: int,
        batch_size: int,
        pool_size: int,
        seed: int,
        save_every: int = 0,
        warmup_steps: int = 100,
    ) -> None:
        self.lisa, self.tokenizer, self.batch_size, self.pool_size = model, tokenizer, batch_size, pool_size
        self.rng = np.random.default_rng(seed)
        self.pool: list[Sample] = []
        self.features = torch.zeros(0)
        params = [*model.language_model.parameters(), *model.mm_projector.parameters()]
        super().__init__(
            model, params, out, name="answer", total_steps=steps, learning_rate=1e-3, warmup_steps=warmup_steps,
            save_every=save_every,
        )  # fmt: skip

    def make_pool(self) -> None:
        """The pool, once (the tower is frozen); the first of the stage's draws from its generator."""
        if self.pool:
            return
        self.pool, self.features = self.tokenized_scenes(self.rng, self.pool_size, "answer pool")

    @torch.no_grad()
    def tokenized_scenes(
        self, rng: np.random.Generator, count: int, label: str, chunk: int = 64
    ) -> tuple[list[Sample], torch.Tensor]:
        """Scenes' tokenized questions and answers and their tower features. Only what the text loss reads is
        kept: a scene's image and masks (about half a megabyte) are dropped once its features are computed, so
        a pool can hold tens of thousands of scenes."""
        assert self.lisa.vision_tower is not None
        tower = self.lisa.vision_tower
        processor = tiny_image_processor(tower.config.image_size)
        question_first = self.lisa.config.question_first
        samples, features = [], []
        with tqdm(total=count, desc=label, unit="scene") as bar:
            for start in range(0, count, chunk):
                scenes = [shapes_sample(rng) for _ in range(min(chunk, count - start))]
                features.append(frozen_patch_states(tower, processor, [s.image for s in scenes], chunk))
                for s in scenes:
                    sample = make_sample(self.tokenizer, s.query.query, s.query.answer, s.targets, question_first)
                    # The count of targets, no pixels: a new tensor, since a view would keep the masks' storage.
                    samples.append(replace(sample, targets=torch.zeros((len(sample.targets), 0, 0), dtype=torch.long)))
                bar.update(len(scenes))
        return samples, torch.cat(features)

    def answer_logits(self, samples: list[Sample], features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits at the answers' positions, and the tokens they predict, given the samples'
        cached tower features."""
        image_tokens = self.lisa.mm_projector(features)
        return answer_logits(self.lisa, answer_states(self.lisa, samples, list(image_tokens)))

    def answer_loss(self, samples: list[Sample], features: torch.Tensor) -> torch.Tensor:
        """Teacher-forced answer loss (``text_loss``) of samples given their cached tower features."""
        return F.cross_entropy(*self.answer_logits(samples, features))

    def in_batches(self, samples: list[Sample], features: torch.Tensor) -> Iterator[tuple[list[Sample], torch.Tensor]]:
        for start in range(0, len(samples), self.batch_size):
            yield samples[start : start + self.batch_size], features[start : start + self.batch_size]

    @torch.no_grad()
    def text_loss_on(self, samples: list[Sample], features: torch.Tensor) -> float:
        """Mean teacher-forced answer loss, a batch at a time."""
        return float(np.mean([self.answer_loss(*batch).item() for batch in self.in_batches(samples, features)]))

    @torch.no_grad()
    def loss_by_token(self, samples: list[Sample], features: torch.Tensor) -> dict[str, float]:
        """Teacher-forced answer loss summed per answer over its name tokens, its place tokens and the rest
        (``answer_token_classes``): whether a run lacks the naming or the reading of the place."""
        classes = {name: torch.tensor(sorted(ids)) for name, ids in answer_token_classes(self.tokenizer).items()}
        sums = dict.fromkeys([*classes, "rest"], 0.0)
        for batch, batch_features in self.in_batches(samples, features):
            logits, tokens = self.answer_logits(batch, batch_features)
            losses = F.cross_entropy(logits, tokens, reduction="none")
            rest = torch.ones_like(tokens, dtype=torch.bool)
            for name, ids in classes.items():
                inside = torch.isin(tokens, ids)
                sums[name] += losses[inside].sum().item()
                rest &= ~inside
            sums["rest"] += losses[rest].sum().item()
        return {name: round(total / len(samples), 4) for name, total in sums.items()}

    def fit_report(self, count: int = 512) -> dict[str, object]:
        """The answer loss on pool scenes against fresh ones (validation seeds): the pool is reread many times,
        and a model that memorises it answers new scenes worse (6,000 scenes over 3,000 steps of 32: 0.218 on
        the pool, 0.389 on fresh scenes); and on fresh scenes, where in the answer the loss sits (the draws of
        this recipe differ in the place, not the name: training/README.md)."""
        count = min(count, len(self.pool))
        fresh = self.tokenized_scenes(np.random.default_rng(VALIDATION_SEED), count, "fresh scenes")
        was_training = self.lisa.training
        self.lisa.eval()
        report = {
            "scenes": count,
            "pool_loss": round(self.text_loss_on(self.pool[:count], self.features[:count]), 4),
            "fresh_loss": round(self.text_loss_on(*fresh), 4),
            "fresh_nats_per_answer": self.loss_by_token(*fresh),
        }
        self.lisa.train(was_training)
        return report

    def train(self) -> Path:
        """Train, then write how well the answers carry over to fresh scenes (``answer_fit.json``)."""
        path = super().train()
        self.make_pool()  # resumed at the last step: nothing trained, but the report needs the pool
        report = self.fit_report()
        (self.output_dir / FIT_REPORT).write_text(json.dumps(report, indent=2) + "\n")
        print(f"answer stage: {report}")
        return path

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.make_pool()  # drawn from the generator first: the saved state is past it
        super().load_data_state(state)

    def batches(self) -> Iterator[np.ndarray]:
        self.make_pool()
        while True:
            yield self.rng.integers(len(self.pool), size=self.batch_size)

    def compute_loss(self, batch: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        ce = self.answer_loss([self.pool[i] for i in batch], self.features[torch.as_tensor(batch)])
        return ce, {"ce": ce.item()}

    def save_model(self, target: Path, final: bool) -> None:
        state = {f"language_model.{k}": v for k, v in self.lisa.language_model.state_dict().items()}
        state.update({f"mm_projector.{k}": v for k, v in self.lisa.mm_projector.state_dict().items()})
        save_file({k: v.contiguous() for k, v in state.items()}, target / ANSWER_WEIGHTS)

    def load_model(self, checkpoint: Path) -> None:
        state = load_file(checkpoint / ANSWER_WEIGHTS)
        for name, module in (("language_model", self.lisa.language_model), ("mm_projector", self.lisa.mm_projector)):
            module.load_state_dict({k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")})


# ---- stages 4 and 5: the LISA chain ------------------------------------------------------------------------
def shapes_items(seed: int, segmenter: SamSegmenter | None = None) -> SeededStream[LisaItem]:
    """Shapes-world questions; with ``segmenter``, each carries SAM's embedding of a click deep inside each
    target (the ground stage's regression target)."""

    def draw(rng: np.random.Generator) -> list[LisaItem]:
        sample = shapes_sample(rng)
        targets = [t.astype(np.uint8) for t in sample.targets]
        prompts = None
        if segmenter is not None:
            prompts = click_embedding(segmenter, targets[0].shape, [innermost_point(t) for t in targets])
        return [LisaItem(sample.image, sample.query.query, sample.query.answer, targets, prompt_targets=prompts)]

    return SeededStream(seed, draw)


def write_release(model: LisaForCausalLM, tokenizer, tower: CLIPVisionModel, out: Path) -> tuple[Path, Path]:
    """The released layout: the LISA folder (fp16 safetensors: small to ship) and the CLIP tower's folder,
    a whole CLIP model as openai/clip-vit-large-patch14 is."""
    model_dir, clip_dir = out / MODEL_FOLDER, out / CLIP_FOLDER
    model.half().save_pretrained(model_dir)
    model.float()
    tokenizer.save_pretrained(model_dir)
    config = tower.config
    # The text tower is never used (LISA reads the vision tower only); a small vocabulary keeps the file small.
    text = CLIPTextConfig(
        vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        bos_token_id=998, eos_token_id=999,
    )  # fmt: skip
    clip = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=config.to_dict(), projection_dim=16))
    clip.vision_model.load_state_dict(tower.vision_model.state_dict())
    clip.half().save_pretrained(clip_dir)
    tiny_image_processor().save_pretrained(clip_dir)
    return model_dir, clip_dir


def choose_on_validation(ground_dir: Path, model_dir: Path, clip_dir: Path, per_kind: int) -> dict:
    """Ship whichever of the ground stage's and the released-recipe stage's weights scores higher (gIoU + cIoU)
    on validation scenes: the released stage's short LoRA run can cost more than it adds to a model trained
    from nothing, and the card's held-out set must not be what decides."""
    from .lisa_card import validation_scores  # lisa_card reads this module's folder names

    scores = {"ground": validation_scores(ground_dir, clip_dir, per_kind)}
    scores["released"] = validation_scores(model_dir, clip_dir, per_kind)
    shipped = max(scores, key=lambda stage: scores[stage]["giou"] + scores[stage]["ciou"])
    if shipped == "ground":
        ground = LisaPredictor.from_pretrained(ground_dir, clip_dir)
        for weights in [*model_dir.glob("model*.safetensors*"), *model_dir.glob("pytorch_model*.bin*")]:
            weights.unlink()  # a loader would still read a weights file (or shard index) the new save leaves
        ground.model.half().save_pretrained(model_dir)
    print(f"validation ({per_kind} per kind): {scores}; shipping the {shipped} stage's weights")
    return {"per_kind": per_kind, "scores": scores, "shipped": shipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clip-steps", type=int, default=3000)
    parser.add_argument("--clip-width", type=int, default=64)
    parser.add_argument("--clip-layers", type=int, default=4)
    parser.add_argument("--clip-lr", type=float, default=1e-3)
    parser.add_argument(
        "--clip-kind-weight", type=float, default=3.0, help="weight of the per-patch kind-of-shape loss (colour, "
        "row and column weigh 1): the kinds are what a tiny tower learns last"
    )  # fmt: skip
    parser.add_argument(
        "--clip-kind-patches", choices=("shape", "all"), default="shape",
        help="patches the kind loss counts: those on a shape, or all of them with 'none' as a kind",
    )  # fmt: skip
    parser.add_argument("--click-steps", type=int, default=300)
    parser.add_argument("--answer-steps", type=int, default=3000)
    parser.add_argument("--answer-pool", type=int, default=6000, help="scenes whose tower features are cached")
    parser.add_argument(
        "--ground-steps", type=int, default=2300,
        help="where the LLM learns to read the meant shape's place; at 1,500 three draws of four fell short",
    )  # fmt: skip
    parser.add_argument("--lisa-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompt-weight", type=float, default=4.0)
    parser.add_argument("--save-every", type=int, default=250, help="steps between resumable checkpoints")
    parser.add_argument(
        "--prompt-order", choices=("question-first", "released"), default="question-first",
        help="question-first: the query before the image, which a 4-layer LLM trained from nothing can look up "
        "(training/README.md, LISA); released: the image first, as LISA is asked",
    )  # fmt: skip
    parser.add_argument(
        "--validation-per-kind", type=int, default=20, help="validation queries per kind that choose between the "
        "ground stage's weights and the released-recipe stage's (0: ship the latter)"
    )  # fmt: skip
    parser.add_argument(
        "--tokenizer", default="recipe", help="'recipe' (the default: training/lisa/tiny_tokenizer, which the "
        "shipped model was trained with), a tokenizer folder, or 'new' to train one (its ids can differ from one "
        "machine to the next); a name, not a path, so that the command recorded in the card runs anywhere",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    try:  # first: a run folder kept from another tokenizer is refused before anything trains
        source = {"recipe": RECIPE_TOKENIZER, "new": None}.get(args.tokenizer, Path(args.tokenizer))
        tokenizer = run_tokenizer(args.out / "tokenizer", source)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    runs = []

    def stage_record(name: str, output_dir: Path) -> dict[str, Any]:
        """The stage's steps and minutes of training as its metrics.csv has them (across stops and resumes)."""
        with (output_dir / METRICS_FILE).open() as f:
            rows = list(csv.DictReader(f))
        last = rows[-1] if rows else {"step": 0, "seconds": 0.0}  # a stage of 0 steps logs none
        return {"stage": name, "steps": int(last["step"]), "minutes": round(float(last["seconds"]) / 60, 1)}

    def run_or_reuse(stage: TrainingLoop, weights: str, steps: int) -> None:
        """A stage that already finished in ``--out`` (same command, e.g. a rerun after a crash) is loaded."""
        reused = (stage.output_dir / weights).is_file()
        if not reused:
            stage.train()
        record = stage_record(stage.name, stage.output_dir)
        if reused:
            if record["steps"] != steps:  # another command's stage: reusing it would ship what was not asked
                parser.error(
                    f"{stage.output_dir} holds a finished {stage.name} stage of {record['steps']} steps, not "
                    f"{steps}: use another --out, or delete that folder to train it again"
                )
            stage.load_model(stage.output_dir)
        runs.append(record)

    tower = CLIPVisionModel(tiny_clip_config(args.clip_width, args.clip_layers))
    clip_stage = ClipPretraining(
        tower, args.out / "clip", args.clip_steps, 32, args.seed, args.clip_kind_weight, args.clip_lr,
        kind_on_shapes_only=args.clip_kind_patches == "shape", save_every=args.save_every,
    )  # fmt: skip
    run_or_reuse(clip_stage, "clip_tower.safetensors", args.clip_steps)
    tower.requires_grad_(False).eval()

    sam = load_sam("tiny", TINY_SAM)
    segmenter = SamSegmenter(sam)
    sam.requires_grad_(False)
    sam.mask_decoder.requires_grad_(True)
    click_stage = ClickPretraining(segmenter, args.out / "click", args.click_steps, 8, args.seed, args.save_every)
    run_or_reuse(click_stage, "mask_decoder.safetensors", args.click_steps)

    lisa_config = tiny_lisa_config(len(tokenizer), args.prompt_order == "question-first", args.clip_width)
    model = LisaForCausalLM(lisa_config, tower.config)
    model.vision_tower = tower
    model.visual_model = sam
    answer_stage = AnswerPretraining(
        model, tokenizer, args.out / "answer", args.answer_steps, 32, args.answer_pool, args.seed + 2, args.save_every
    )
    run_or_reuse(answer_stage, ANSWER_WEIGHTS, args.answer_steps)
    processor = tiny_image_processor()
    stages = [
        LisaTrainConfig(
            str(args.out / "ground"), args.ground_steps, args.batch_size, trainable="ground",
            learning_rate=1e-3, warmup_steps=100, schedule="cosine", prompt_weight=args.prompt_weight,
            save_every=args.save_every, seed=args.seed,
        ),
        LisaTrainConfig(
            str(args.out / "lisa"), args.lisa_steps, args.batch_size, save_every=args.save_every, seed=args.seed + 1
        ),
    ]  # fmt: skip
    for config in stages:
        items = shapes_items(config.seed, segmenter if config.prompt_weight else None)
        trainer = LisaTrainer(model, tokenizer, processor, items, config)
        trainer.train()
        runs.append(stage_record(config.trainable, trainer.output_dir))
    model.eval()
    model_dir, clip_dir = write_release(model, tokenizer, tower, args.out)
    flags = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in vars(args).items())
    record: dict[str, object] = {"command": f"python -m training.train_tiny_lisa {flags}", "runs": runs}
    if (answer_stage.output_dir / FIT_REPORT).is_file():
        record["answer_fit"] = json.loads((answer_stage.output_dir / FIT_REPORT).read_text())
    if args.validation_per_kind:
        record["validation"] = choose_on_validation(args.out / "ground", model_dir, clip_dir, args.validation_per_kind)
    (model_dir / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {model_dir} and {clip_dir}")


if __name__ == "__main__":
    main()
