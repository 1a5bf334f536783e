"""Each stage for 2 steps on CPU: what trains, what stays frozen, the loss falls, checkpoints round-trip."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from run_stops import Stopped, stop_before_step

from osprey_model import OspreyForCausalLM
from osprey_model.tiny import CLIP_FILE, llama2_tokenizer
from osprey_model.tokenization import add_region_tokens
from training import shapes_world
from training.data.dataset import RegionDataset, collate
from training.data.records import load_caption_records, load_osprey_records, load_region_text_records
from training.stages import STAGES
from training.trainer import TrainConfig, Trainer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return shapes_world.generate(tmp_path_factory.mktemp("world"), count=4, seed=1)


@pytest.fixture(scope="module")
def tokenizer():
    tok = llama2_tokenizer()
    add_region_tokens(tok)
    return tok


def _records(stage: int, world: dict[str, Path]):
    images = world["captions"].parent / "images"
    if stage == 1:
        return load_caption_records(world["captions"], images)
    if stage == 2:
        return load_region_text_records(world["instances"], images)
    return load_osprey_records(world["short_form"], images)


def _model(tiny_dir: Path) -> OspreyForCausalLM:
    model = OspreyForCausalLM.from_pretrained(tiny_dir)
    model.set_region_token_ids(32000, 32001)
    return model


def _fixed_batch_loss(model: OspreyForCausalLM, batch: dict) -> float:
    model.eval()
    with torch.no_grad():
        return model(batch["input_ids"], batch["pixel_values"], batch["masks"], batch["labels"]).loss.item()


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_two_steps_train_only_the_stage_modules(stage: int, tiny_dir: Path, world, tokenizer, tmp_path: Path) -> None:
    model = _model(tiny_dir)
    records = _records(stage, world)[:2]
    dataset = RegionDataset(records, tokenizer, model.config.vision.image_size, 16, model.config.max_length)
    batch = collate([dataset[0], dataset[1]])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss_before = _fixed_batch_loss(model, batch)

    config = TrainConfig(stage=stage, output_dir=str(tmp_path / "out"), max_steps=2, batch_size=2, learning_rate=3e-3)
    trainer = Trainer(model, dataset, config, tokenizer)
    grads = set()
    trainer.model.train()
    trainer.loss(batch).backward()
    for name, p in model.named_parameters():
        if p.grad is not None and p.grad.abs().sum() > 0:
            grads.add(name.split(".")[0])
    trainer.optimizer.zero_grad(set_to_none=True)
    assert grads == set(STAGES[stage].trains)

    final = trainer.train()
    changed = {name.split(".")[0] for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed == set(STAGES[stage].trains)  # the vision tower and the other modules stay frozen
    assert _fixed_batch_loss(model, batch) < loss_before

    rows = list(csv.DictReader((final / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2]
    shutil.copy(tiny_dir / CLIP_FILE, final / CLIP_FILE)
    reloaded = OspreyForCausalLM.from_pretrained(final)
    for key, value in model.released_state_dict().items():
        torch.testing.assert_close(reloaded.released_state_dict()[key], value, rtol=0, atol=0)
    assert json.loads((final / "train_config.json").read_text())["stage"] == stage


def test_resume_continues_from_the_last_checkpoint(tiny_dir: Path, world, tokenizer, tmp_path: Path) -> None:
    model = _model(tiny_dir)
    dataset = RegionDataset(
        _records(3, world)[:2], tokenizer, model.config.vision.image_size, 16, model.config.max_length
    )
    config = TrainConfig(stage=3, output_dir=str(tmp_path / "out"), max_steps=2, batch_size=1, save_every=1)
    Trainer(model, dataset, config, tokenizer).train()
    assert (tmp_path / "out/checkpoint-last/trainer_state.pt").is_file()

    resumed = Trainer(_model(tiny_dir), dataset, TrainConfig(**{**config.__dict__, "max_steps": 3}), tokenizer)
    assert resumed.try_resume() and resumed.step == 2
    resumed.train()
    rows = list(csv.DictReader((tmp_path / "out/metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]


def test_a_stopped_and_resumed_stage_ends_at_the_weights_of_one_that_never_stopped(
    tiny_dir: Path, world, tokenizer, tmp_path: Path
) -> None:
    """Stopped in its second epoch, a resumed run reads on from that epoch's next record (it started the epoch
    over before) and ends where a run that never stopped does."""
    model = _model(tiny_dir)
    dataset = RegionDataset(
        _records(3, world)[:3], tokenizer, model.config.vision.image_size, 16, model.config.max_length
    )

    def trainer(out: str) -> Trainer:
        config = TrainConfig(stage=3, output_dir=str(tmp_path / out), max_steps=7, batch_size=1, save_every=1)
        return Trainer(_model(tiny_dir), dataset, config, tokenizer)

    reader = trainer("order")
    first, second = ([batch["ids"][0] for batch in reader.batches()] for _ in range(2))
    assert first != second  # so a resume that drew the first epoch's order again would train on other records

    whole = trainer("whole")
    whole.train()
    stopped = trainer("stopped")
    stop_before_step(stopped, 5)  # checkpoint at step 4: one record into the second epoch
    with pytest.raises(Stopped):
        stopped.train()
    resumed = trainer("stopped")
    resumed.train()
    expected, got = whole.osprey.released_state_dict(), resumed.osprey.released_state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_lora_stage3_trains_adapters_and_saves_released_names(tiny_dir: Path, world, tokenizer, tmp_path: Path) -> None:
    model = _model(tiny_dir)
    dataset = RegionDataset(
        _records(3, world)[:2], tokenizer, model.config.vision.image_size, 16, model.config.max_length
    )
    config = TrainConfig(stage=3, output_dir=str(tmp_path / "lora"), max_steps=1, batch_size=2, lora_rank=4)
    trainer = Trainer(model, dataset, config, tokenizer)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    llm = {name for name in trainable if name.startswith("language_model")}
    assert llm and all("lora_" in name for name in llm)
    assert any(n.startswith("projector") for n in trainable) and any(n.startswith("mask_extractor") for n in trainable)
    final = trainer.train()
    shutil.copy(tiny_dir / CLIP_FILE, final / CLIP_FILE)
    reloaded = OspreyForCausalLM.from_pretrained(final)  # merged: plain LLaMA names, loads strictly
    assert "model.layers.0.self_attn.q_proj.weight" in reloaded.released_state_dict()


def test_train_cli_runs_a_stage_from_the_previous_checkpoint(tiny_dir: Path, world, tmp_path: Path) -> None:
    from training.train import main

    images = world["short_form"].parent / "images"
    main(
        ["--stage", "3", "--init", str(tiny_dir), "--clip", str(tiny_dir / CLIP_FILE),
         "--output-dir", str(tmp_path / "s3"),
         "--data", "osprey", str(world["short_form"]), str(images), "--max-steps", "1", "--batch-size", "1",
         "--num-workers", "0", "--device", "cpu"]
    )  # fmt: skip
    assert (tmp_path / "s3/model.safetensors").is_file() and (tmp_path / "s3/tokenizer.json").is_file()
    OspreyForCausalLM.from_pretrained(tmp_path / "s3", tiny_dir / CLIP_FILE)
