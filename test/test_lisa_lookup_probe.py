"""The tiny LISA's lookup probe (training/lisa/lookup_probe.py): the question's place in the sequence, and a
short run end to end on a random tower."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionModel

from training.lisa.lookup_probe import LookupProbe, WordVocabulary, lookup_set, mean_predictor_distance, train_probe
from training.train_tiny_lisa import tiny_clip_config, tiny_image_processor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_tower() -> CLIPVisionModel:
    torch.manual_seed(0)
    config = tiny_clip_config()
    config.image_size = 56  # 16 patch tokens
    return CLIPVisionModel(config).eval()


def test_question_first_moves_the_image_tokens_to_the_end(small_tower: CLIPVisionModel) -> None:
    """The last state reads the image last with --question-first: changing only the image changes it, while
    in the released order the question's last word comes last."""
    probe = LookupProbe(small_tower.config.hidden_size).eval()
    seen = {}
    probe.llm.register_forward_hook(lambda _m, args, kwargs, out: seen.update(kwargs), with_kwargs=True)
    features = torch.randn(1, 16, small_tower.config.hidden_size)
    ids = [[5, 6, 7]]
    for question_first in (False, True):
        probe(features, ids, question_first)
        embeds = seen["inputs_embeds"][0]
        image_rows = probe.projector(features)[0]
        where = slice(3, None) if question_first else slice(0, 16)
        torch.testing.assert_close(embeds[where], image_rows)


def test_words_keep_their_ids_and_unseen_words_get_new_ones() -> None:
    vocabulary = WordVocabulary()
    first = vocabulary.encode("Segment the yellow star.")
    assert vocabulary.encode("segment THE yellow star .") == first
    assert len(set(vocabulary.encode("the aubergine"))) == 2 and vocabulary.encode("the aubergine")[0] == first[1]


def test_training_lowers_the_error_on_what_it_trains_on(small_tower: CLIPVisionModel) -> None:
    processor = tiny_image_processor(56)
    train = lookup_set(small_tower, processor, 24, 0, False, ["colour", "name"])
    assert train.features.shape == (24, 16, small_tower.config.hidden_size)
    assert set(train.kinds) == {"colour", "name"} and ((train.points >= 0) & (train.points <= 1)).all()
    rows = train_probe(train, {"train": train}, question_first=True, steps=60, batch_size=24, eval_every=30)
    assert [row["step"] for row in rows] == [0, 30, 60]
    assert rows[-1]["train_distance"] < rows[0]["train_distance"]
    assert mean_predictor_distance(train, train) > 0


def test_the_command_writes_its_rows(tmp_path: Path, small_tower: CLIPVisionModel) -> None:
    tower_file = tmp_path / "clip_tower.safetensors"
    save_file({k: v.contiguous() for k, v in small_tower.state_dict().items()}, tower_file)
    out = tmp_path / "probe.json"
    command = [
        sys.executable, "-m", "training.lisa.lookup_probe", "--tower", str(tower_file),
        "--steps", "4", "--train-samples", "8", "--eval-samples", "4", "--question-first", "--threads", "1",
        "--out", str(out),
    ]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["settings"]["question_first"] == "True"  # and the 56 px tower was read as one (16 tokens)
    assert set(result["mean_predictor_distance"]) == {"held_out_colour", "name"}
    assert result["rows"][-1]["step"] == 4 and "held_out_colour_distance" in result["rows"][-1]
