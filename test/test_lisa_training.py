"""LISA's training pieces against hand-computed values on small tensors."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from osprey_model.lisa import LisaPredictor
from osprey_model.lisa.tiny import create_tiny_lisa, lisa_tokenizer
from osprey_model.shapes import random_shapes, render
from osprey_model.shapes_queries import COLOUR_KNOWLEDGE, GEOMETRY, candidate_queries
from training.lisa.data import (
    SemanticDataset,
    draw_source,
    load_reason_seg,
    load_refer,
    load_semantic,
    load_vqa,
    semantic_targets,
)
from training.lisa.losses import LisaLoss, lisa_loss, mask_bce, mask_dice
from training.lisa.metrics import segmentation_scores
from training.lisa.recipe import (
    LisaRecipe,
    answer_ids,
    make_sample,
    merge_lora,
    prepare_for_training,
    sample_loss,
)
from training.loop import warmup_decay
from training.train_tiny_sam import scene

ROOT = Path(__file__).resolve().parents[1]


def test_bce_and_dice_by_hand() -> None:
    logits = torch.tensor([[[0.0, 2.0], [-2.0, 0.0]]])  # one 2x2 mask
    target = torch.tensor([[[1, 1], [0, 255]]])  # the last pixel ignored
    p = [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))]
    bce = -(math.log(p[0]) + math.log(p[1]) + math.log(1 - p[2])) / 3
    assert mask_bce(logits, target).item() == pytest.approx(bce, rel=1e-6)
    scale, eps = 1000.0, 1e-6
    numerator = 2 * (p[0] + p[1]) / scale
    denominator = (p[0] + p[1] + p[2]) / scale + 2 / scale
    assert mask_dice(logits, target).item() == pytest.approx(1 - (numerator + eps) / (denominator + eps), rel=1e-5)


def test_the_loss_weights_and_averaging_over_all_masks() -> None:
    ce = torch.tensor(2.0)
    a = torch.full((2, 3, 3), 4.0)  # two confident masks of one sample
    b = torch.full((1, 3, 3), -4.0)  # one of another
    ta, tb = torch.ones(2, 3, 3, dtype=torch.long), torch.ones(1, 3, 3, dtype=torch.long)
    loss = lisa_loss(ce, [a, b, torch.zeros(0, 3, 3)], [ta, tb, torch.zeros(0, 3, 3, dtype=torch.long)])
    bce = (2 * mask_bce(a[:1], ta[:1]) + mask_bce(b, tb)) / 3
    dice = (2 * mask_dice(a[:1], ta[:1]) + mask_dice(b, tb)) / 3
    assert loss.bce.item() == pytest.approx(bce.item()) and loss.dice.item() == pytest.approx(dice.item())
    assert loss.total.item() == pytest.approx(2.0 + 2.0 * bce.item() + 0.5 * dice.item())
    text_only = lisa_loss(ce, [torch.zeros(0, 3, 3)], [torch.zeros(0, 3, 3, dtype=torch.long)])
    assert text_only.total.item() == 2.0 and text_only.bce.item() == 0.0


def test_giou_and_ciou_by_hand() -> None:
    truth = np.array([[1, 1, 0, 0], [1, 255, 0, 0]])
    half = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], bool)  # the 255 pixel does not count
    miss = np.zeros((2, 4), bool)
    empty_truth = np.zeros((2, 4), np.uint8)
    scores = segmentation_scores([(half, truth), (miss, truth), (miss, empty_truth)])
    assert scores.giou == pytest.approx((1 / (3 + 1e-5) + 0.0 + 1.0) / 3)  # empty union counts 1
    assert scores.ciou == pytest.approx(1 / 6) and scores.masks == 3
    with pytest.raises(ValueError, match="differ in size"):
        segmentation_scores([(np.zeros((3, 3), bool), truth)])


def write_reason_seg(folder: Path) -> None:
    """Three ReasonSeg-format records, one good, one with only a flag, one whose JSON is cut short."""
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(folder / "good.jpg")
    shapes = [
        {"label": "target", "points": [[5, 5], [45, 5], [45, 35], [5, 35]]},  # the big one, filled first
        {"label": "ignore", "points": [[10, 10], [20, 10], [20, 20], [10, 20]]},  # inside it: 255 on top
        {"label": "flag", "points": [[0, 0], [59, 0], [59, 39]]},
    ]
    (folder / "good.json").write_text(
        json.dumps({"text": ["What could hold water?"], "is_sentence": True, "shapes": shapes})
    )
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(folder / "flag.jpg")
    (folder / "flag.json").write_text(json.dumps({"text": ["x"], "shapes": shapes[2:]}))
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(folder / "cut.jpg")
    (folder / "cut.json").write_text('{"text": ["x"], "shapes": [')


def test_reason_seg_records_fill_largest_first_ignore_as_255_and_skip_bad_ones(tmp_path: Path, caplog) -> None:
    write_reason_seg(tmp_path / "train")
    caplog.set_level(logging.WARNING)
    records = load_reason_seg(tmp_path / "train")
    assert [r.id for r in records] == ["good"] and records[0].is_sentence
    mask = records[0].masks[0]
    assert mask.shape == (40, 60) and mask[25, 30] == 1 and mask[15, 15] == 255 and mask[38, 58] == 0
    assert records[0].texts == [["What could hold water?"]]
    assert "cut.json skipped" in caplog.text and "flag.json skipped: no target region" in caplog.text


def test_refer_records_from_a_refs_pickle_and_instances(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "refcoco"
    folder.mkdir()
    square = [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]
    instances = {
        "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": 50, "width": 60}],
        "annotations": [{"id": 7, "image_id": 1, "segmentation": square, "category_id": 1}],
    }
    (folder / "instances.json").write_text(json.dumps(instances))
    refs = [
        {"ref_id": 0, "ann_id": 7, "image_id": 1, "split": "train", "sentences": [{"sent": "the left box"}]},
        {"ref_id": 1, "ann_id": 7, "image_id": 1, "split": "val", "sentences": [{"sent": "a val one"}]},
        {"ref_id": 2, "ann_id": 99, "image_id": 1, "split": "train", "sentences": [{"sent": "missing ann"}]},
    ]
    (folder / "refs(unc).p").write_bytes(pickle.dumps(refs))
    caplog.set_level(logging.WARNING)
    records = load_refer(folder, tmp_path / "images")
    assert len(records) == 1 and records[0].texts == [["the left box"]]
    assert records[0].masks[0][20, 20] == 1 and records[0].masks[0].sum() > 300
    assert "REFER ref 2 skipped" in caplog.text

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "refs(unc).p").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(ValueError, match=r"refusing to build builtins\.print"):
        load_refer(folder, tmp_path / "images")


def test_semantic_targets_ask_about_at_most_three_present_classes(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.jpg")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "orphan.jpg")
    raw = np.zeros((8, 8), np.uint8)  # ADE20K style: 0 unlabelled, class k stored as k + 1
    raw[:2], raw[2:4], raw[4:6], raw[6:7] = 1, 2, 3, 4
    Image.fromarray(raw).save(tmp_path / "labels" / "a.png")
    names = ("wall", "floor, flooring", "tree", "sky-other")  # '-' classes are not asked about
    source = SemanticDataset("ade20k", tmp_path / "images", tmp_path / "labels", names, label_offset=-1)
    records = load_semantic(source)
    assert [r.id for r in records] == ["a"]
    masks, classes = semantic_targets(source, records[0], np.random.default_rng(0))
    assert sorted(classes) == ["floor", "tree", "wall"] and all(m.sum() == 16 for m in masks)
    row = {"wall": 0, "floor": 2, "tree": 4}
    for mask, name in zip(masks, classes, strict=True):
        assert mask[row[name]].all() and not mask[7].any()  # the unlabelled last row is in no mask


def test_vqa_records_and_the_sampling_mix(tmp_path: Path, caplog) -> None:
    data = [
        {
            "id": "x",
            "image": "a.jpg",
            "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}],
        },
        {"id": "y", "image": "b.jpg", "conversations": [{"from": "human", "value": "Q"}]},
    ]
    (tmp_path / "vqa.json").write_text(json.dumps(data))
    caplog.set_level(logging.WARNING)
    assert [r.id for r in load_vqa(tmp_path / "vqa.json", tmp_path)] == ["x"]
    assert "VQA record y skipped" in caplog.text
    rng = np.random.default_rng(0)
    draws = [draw_source(rng, {"sem_seg": 1, "refer_seg": 1, "vqa": 1, "reason_seg": 1}) for _ in range(16_000)]
    assert draws.count("sem_seg") / len(draws) == pytest.approx(9 / 16, abs=0.02)
    assert draws.count("reason_seg") / len(draws) == pytest.approx(1 / 16, abs=0.01)
    assert {draw_source(rng, {"vqa": 3}) for _ in range(20)} == {"vqa"}
    with pytest.raises(ValueError, match="no training data"):
        draw_source(rng, {})


@pytest.fixture(scope="module")
def lisa_for_training(tmp_path_factory: pytest.TempPathFactory):
    model_dir, clip_dir = create_tiny_lisa(tmp_path_factory.mktemp("lisa-train"))
    return model_dir, clip_dir


def toy_batch(predictor: LisaPredictor, seed: int) -> tuple[list, list, list]:
    """Shapes scenes; the query names a colour, the answer is "Sure, [SEG]." with that shape's mask."""
    rng = np.random.default_rng(seed)
    samples, tokens, frames = [], [], []
    for _ in range(2):
        image, masks = scene(rng)
        target = masks[0]
        samples.append(make_sample(predictor.tokenizer, "Segment the first shape.", "Sure, [SEG].", [target]))
        pixels = predictor.image_processor(images=image, return_tensors="pt", input_data_format="channels_last")
        tokens.append(predictor.model.encode_images(pixels["pixel_values"])[0])
        frame = predictor.segmenter.encode(image)
        frame.embedding = frame.embedding.clone()  # out of inference mode: the decoder trains on it
        frames.append(frame)
    return samples, tokens, frames


def test_answer_ids_and_labels_put_seg_in_order(lisa_for_training) -> None:
    tokenizer = lisa_tokenizer()
    seg = tokenizer.convert_tokens_to_ids("[SEG]")
    ids = answer_ids(tokenizer, "Sure, [SEG] and [SEG].")
    assert ids.count(seg) == 2 and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[: ids.index(seg)]) == "Sure,"
    masks = [np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)]
    sample = make_sample(tokenizer, "Segment both.", "Sure, [SEG] and [SEG].", masks)
    answer = sample.labels[sample.labels != -100].tolist()
    assert answer == ids and (sample.labels == -100).sum() == len(sample.input_ids) - len(ids)
    assert sample.targets.shape == (2, 4, 4) and sample.targets[1].all()
    with pytest.raises(ValueError, match="1 \\[SEG\\] for 2 target masks"):
        make_sample(tokenizer, "Segment both.", "Sure, [SEG].", masks)
    first = make_sample(tokenizer, "Segment both.", "Sure, [SEG] and [SEG].", masks, question_first=True)
    assert first.labels.tolist() == sample.labels.tolist()  # the prompt is as long; the answer is the same
    image_at = int((first.input_ids < 0).nonzero()[0])
    assert tokenizer.decode(first.input_ids[image_at + 2 : -len(ids)]) == "ASSISTANT:"


def test_gradients_reach_what_the_recipe_trains_and_nothing_else(lisa_for_training) -> None:
    predictor = LisaPredictor.from_pretrained(*lisa_for_training)
    model = predictor.model
    trainable = prepare_for_training(model, LisaRecipe())
    samples, tokens, frames = toy_batch(predictor, 0)
    loss = sample_loss(model, predictor.segmenter, predictor.tokens.seg, samples, tokens, frames)
    assert loss.ce > 0 and loss.bce > 0 and loss.dice > 0
    loss.total.backward()
    named = dict(model.named_parameters())

    def grad(name: str) -> float:
        g = named[name].grad
        return 0.0 if g is None else float(g.abs().sum())

    lora_b = [n for n in named if "lora_B" in n]
    assert lora_b and all(grad(n) > 0 for n in lora_b)  # (lora_A's gradient is 0 while B starts at 0)
    assert grad("text_hidden_fcs.0.0.weight") > 0 and grad("text_hidden_fcs.0.2.weight") > 0
    assert grad("visual_model.mask_decoder.output_hypernetworks_mlps.0.layers.0.weight") > 0
    assert grad("language_model.lm_head.weight") > 0 and grad("language_model.model.embed_tokens.weight") > 0
    frozen = [n for n in named if n.startswith(("vision_tower.", "mm_projector.", "visual_model.image_encoder.",
                                                "visual_model.prompt_encoder."))]  # fmt: skip
    frozen += [n for n in named if n.endswith("q_proj.base_layer.weight")]
    assert frozen and all(named[n].grad is None and not named[n].requires_grad for n in frozen)
    assert {id(p) for p in trainable} == {id(p) for p in model.parameters() if p.requires_grad}


def test_a_few_steps_lower_the_loss_on_the_batch_and_on_a_held_out_one(lisa_for_training) -> None:
    torch.manual_seed(0)
    predictor = LisaPredictor.from_pretrained(*lisa_for_training)
    model = predictor.model
    recipe = LisaRecipe(learning_rate=3e-3, warmup_steps=2)
    parameters = prepare_for_training(model, recipe)
    optimizer = torch.optim.AdamW(parameters, lr=recipe.learning_rate, betas=recipe.betas, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_decay(step, 40, recipe.warmup_steps))
    train, held_out = toy_batch(predictor, 1), toy_batch(predictor, 2)

    def loss_of(batch) -> LisaLoss:
        return sample_loss(model, predictor.segmenter, predictor.tokens.seg, *batch)

    with torch.no_grad():
        before_train, before_held = loss_of(train).total.item(), loss_of(held_out).total.item()
    for _ in range(12):
        loss = loss_of(train)
        optimizer.zero_grad()
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(parameters, recipe.max_grad_norm)
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        after_train, after_held = loss_of(train).total.item(), loss_of(held_out).total.item()
    assert after_train < 0.7 * before_train and after_held < 0.9 * before_held, (
        before_train,
        after_train,
        before_held,
        after_held,
    )
    merge_lora(model)  # back to the released layout: plain Linears, every key as released
    assert not any("lora" in name for name in model.state_dict())
    model.load_released_state_dict(model.released_state_dict())


def test_warmup_then_linear_decay() -> None:
    assert [round(warmup_decay(s, 5000, 100), 4) for s in (0, 49, 99, 100, 2550, 5000)] == [
        0.01,
        0.5,
        1.0,
        1.0,
        0.5,
        0.0,
    ]


def test_shapes_queries_are_unambiguous_and_held_out_phrasings_are_new() -> None:
    rng = np.random.default_rng(0)
    kinds: dict[str, int] = {}
    train_texts: set[str] = set()
    held_texts: set[str] = set()
    for _ in range(60):
        shapes = random_shapes(rng, 320, 240, int(rng.integers(3, 6)), overlap=0.4)
        _, masks = render(shapes, 320, 240)
        for held_out, texts in ((False, train_texts), (True, held_texts)):
            for q in candidate_queries(shapes, masks, rng, held_out=held_out):
                kinds[q.kind] = kinds.get(q.kind, 0) + 1
                texts.add(q.query)
                targets = [shapes[i] for i in q.targets]
                assert q.answer.count("[SEG]") == len(q.targets) and q.query.endswith(
                    "Please output segmentation mask."
                )
                if q.kind == "colour":
                    seen = [s for s, m in zip(shapes, masks, strict=True) if m.sum() >= 30]  # hidden ones don't count
                    assert [s.colour for s in seen].count(targets[0].colour) == 1
                    assert any(
                        t in q.query
                        for t in [*COLOUR_KNOWLEDGE[targets[0].colour][0], *COLOUR_KNOWLEDGE[targets[0].colour][1]]
                    )
                if q.kind == "geometry":
                    assert any(
                        f in q.query for f in [*GEOMETRY[targets[0].category][0], *GEOMETRY[targets[0].category][1]]
                    )
                if q.kind == "both":
                    assert len({s.colour for s in targets}) == 1 and len(targets) == 2
                    xs = [np.nonzero(masks[i])[1].mean() for i in q.targets]
                    assert xs[0] <= xs[1]  # [SEG] order: left to right
                names = [rf"the {t.colour} {t.category} \(column [0-7], row [0-7]\) \[SEG\]" for t in targets]
                assert re.fullmatch("Sure, " + " and ".join(names) + r"\.", q.answer), q.answer  # what, where
                assert held_out is False or q.kind != "name"  # name queries are training's first step only
    assert set(kinds) == {"colour", "geometry", "left_of", "hidden_by", "both", "name"}, kinds
    assert not train_texts & held_texts  # the held-out phrasings are never trained on


def test_shapes_samples_are_the_same_in_every_process() -> None:
    """The card's held-out set and the training streams are fixed by their seeds alone, not by the process's
    string hashing (a set of colours iterated in hash order once reordered the queries, and the rng with them)."""
    script = (
        "import numpy as np; from training.lisa.shapes_data import shapes_sample; rng = np.random.default_rng(3); "
        "print([shapes_sample(rng, held_out=True).query.query for _ in range(40)])"
    )
    outputs = set()
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.add(result.stdout)
    assert len(outputs) == 1
