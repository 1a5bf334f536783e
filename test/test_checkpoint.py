"""Released-layout checkpoints: sharded .bin + index with the official names, safetensors, refusal of pickles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from osprey_model import OspreyForCausalLM
from osprey_model.checkpoint_io import BIN_INDEX, CheckpointError, load_torch_bin
from osprey_model.config import get_preset
from osprey_model.tiny import CLIP_FILE, create_tiny_checkpoint, save_open_clip_file


def _logits(model: OspreyForCausalLM, tokenizer_ids: list[int], masks: torch.Tensor) -> torch.Tensor:
    size = model.config.vision.image_size
    pixels = torch.linspace(-1, 1, 3 * size * size).reshape(1, 3, size, size)
    with torch.no_grad():
        return model([torch.tensor(tokenizer_ids)], pixels, [masks]).logits


def _prompt_ids(model: OspreyForCausalLM) -> list[int]:
    model.set_region_token_ids(32000, 32001)
    return [1, 319, -200, 13, 910, 32000, 32001, 29889, 29871]


def _masks() -> torch.Tensor:
    masks = torch.zeros(1, 60, 80)
    masks[0, 10:40, 20:70] = 1
    return masks


def _released_layout(tmp_path: Path) -> tuple[Path, OspreyForCausalLM]:
    """Sharded .bin files, the released names, the ignored vision-tower copies and rotary buffers."""
    torch.manual_seed(3)
    writer = OspreyForCausalLM(get_preset("tiny")).eval()
    ckpt = tmp_path / "released"
    writer.save_pretrained(ckpt, safe_serialization=False, max_shard_bytes=2**21)
    save_open_clip_file(writer, ckpt / CLIP_FILE)
    index = json.loads((ckpt / BIN_INDEX).read_text())
    shard_names = sorted(set(index["weight_map"].values()))
    extra = {
        f"model.vision_tower.vision_tower.visual.{k}": v for k, v in writer.vision_tower.visual.state_dict().items()
    }
    for layer in range(writer.config.num_hidden_layers):
        extra[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    last = ckpt / shard_names[-1]
    shard = torch.load(last, weights_only=True)
    shard.update(extra)
    torch.save(shard, last)
    index["weight_map"].update({key: shard_names[-1] for key in extra})
    (ckpt / BIN_INDEX).write_text(json.dumps(index))
    return ckpt, writer


def test_released_sharded_bin_loads_with_same_logits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpt, writer = _released_layout(tmp_path)
    assert len(list(ckpt.glob("pytorch_model-*-of-*.bin"))) > 1
    caplog.set_level("INFO")
    loaded = OspreyForCausalLM.from_pretrained(ckpt)
    assert "vision-tower copies" in caplog.text and "0 missing" in caplog.text
    ids = _prompt_ids(writer)
    _prompt_ids(loaded)
    torch.testing.assert_close(_logits(loaded, ids, _masks()), _logits(writer, ids, _masks()), rtol=0, atol=0)


def test_safetensors_round_trip(tmp_path: Path, tiny_dir: Path) -> None:
    model = OspreyForCausalLM.from_pretrained(tiny_dir)
    out = tmp_path / "copy"
    model.save_pretrained(out)
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    shutil.copy(tiny_dir / CLIP_FILE, out / CLIP_FILE)
    again = OspreyForCausalLM.from_pretrained(out)
    assert model.released_state_dict().keys() == again.released_state_dict().keys()
    for key, value in model.released_state_dict().items():
        torch.testing.assert_close(again.released_state_dict()[key], value, rtol=0, atol=0)
    ids = _prompt_ids(model)
    _prompt_ids(again)
    torch.testing.assert_close(_logits(again, ids, _masks()), _logits(model, ids, _masks()), rtol=0, atol=0)


def test_saved_names_are_the_released_names(tiny_dir: Path) -> None:
    keys = OspreyForCausalLM.from_pretrained(tiny_dir).released_state_dict().keys()
    assert {"model.mm_projector.0.weight", "model.mm_projector.2.bias", "lm_head.weight", "model.norm.weight"} <= keys
    assert {"mask_extractor.res2.weight", "mask_extractor.feat_linear.bias"} <= keys
    assert "mask_extractor.mask_linear.layers.2.weight" in keys
    assert not any(key.startswith(("vision_tower", "language_model", "projector")) for key in keys)


class Evil:
    def __reduce__(self):
        return (print, ("this ran during unpickling",))


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.bin"
    torch.save({"weight": torch.zeros(2), "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_torch_bin(path)


def test_pickle_with_non_tensor_values_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.bin"
    torch.save({"weight": torch.zeros(2), "note": "hello"}, path)
    with pytest.raises(CheckpointError, match="non-tensor"):
        load_torch_bin(path)


def test_corrupt_shard_is_refused(tmp_path: Path) -> None:
    ckpt = create_tiny_checkpoint(tmp_path / "ckpt", safe_serialization=False)
    (ckpt / "pytorch_model.bin").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError):
        OspreyForCausalLM.from_pretrained(ckpt)


def test_unexpected_and_missing_keys_are_errors(tmp_path: Path) -> None:
    ckpt = create_tiny_checkpoint(tmp_path / "ckpt", safe_serialization=False)
    state = torch.load(ckpt / "pytorch_model.bin", weights_only=True)
    state["model.some_new_layer.weight"] = torch.zeros(1)
    torch.save(state, ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="some_new_layer"):
        OspreyForCausalLM.from_pretrained(ckpt)
    del state["model.some_new_layer.weight"], state["mask_extractor.feat_linear.weight"]
    torch.save(state, ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"missing mask_extractor\.feat_linear\.weight"):
        OspreyForCausalLM.from_pretrained(ckpt)


def test_missing_clip_file_says_where_to_put_it(tmp_path: Path, tiny_dir: Path) -> None:
    model_dir = tmp_path / "no-clip"
    shutil.copytree(tiny_dir, model_dir)
    (model_dir / CLIP_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"open_clip_pytorch_model\.bin.*--clip"):
        OspreyForCausalLM.from_pretrained(model_dir)
    loaded = OspreyForCausalLM.from_pretrained(model_dir, clip_path=tiny_dir / CLIP_FILE)
    assert np.isfinite(loaded.projector[0].weight.detach().numpy()).all()


def test_clip_file_without_trunk_weights_is_refused(tmp_path: Path, tiny_dir: Path) -> None:
    clip = tmp_path / "partial.bin"
    state = torch.load(tiny_dir / CLIP_FILE, weights_only=True)
    torch.save({k: v for k, v in state.items() if "stages.3" not in k}, clip)
    with pytest.raises(CheckpointError, match=r"stages\.3"):
        OspreyForCausalLM.from_pretrained(tiny_dir, clip_path=clip)
