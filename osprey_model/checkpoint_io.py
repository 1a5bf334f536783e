"""Reading and writing released-layout checkpoints: sharded ``.bin`` (pickle, loaded safely) or safetensors.

The released Osprey checkpoint is a transformers-4.31 ``LlamaForCausalLM``-style state dict. This module
knows the file formats; the name mapping onto our modules lives in ``modeling_osprey``.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

BIN_INDEX = "pytorch_model.bin.index.json"
SAFETENSORS_INDEX = "model.safetensors.index.json"
SINGLE_BIN = "pytorch_model.bin"
SINGLE_SAFETENSORS = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted or understood."""


def load_torch_bin(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a pickled state dict without executing code (``weights_only=True``) and check it holds tensors."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as exc:
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain tensor state dict "
            f"(weights_only=True load failed: {str(exc).splitlines()[0]})"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, expected a dict of tensors")
    bad = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path} holds non-tensor entries: {bad[:5]}")
    return state


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file; a truncated, empty or foreign file raises ``CheckpointError`` naming it."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc} (a truncated or incomplete download?)") from exc


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The weight files of a checkpoint directory, preferring safetensors over pickles."""
    for index_name in (SAFETENSORS_INDEX, BIN_INDEX):
        index = model_dir / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{index}: not a valid shard index ({exc!r})") from exc
            files = [model_dir / name for name in sorted(set(weight_map.values()))]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"{index} lists shards that are not in {model_dir}: {missing}")
            return files
    for single in (SINGLE_SAFETENSORS, SINGLE_BIN):
        if (model_dir / single).is_file():
            return [model_dir / single]
    raise FileNotFoundError(
        f"no weights in {model_dir}: expected {SAFETENSORS_INDEX}, {BIN_INDEX}, {SINGLE_SAFETENSORS} or "
        f"{SINGLE_BIN} (download sunshine-lwt/Osprey-7b into that folder)"
    )


def read_shard(path: Path) -> dict[str, torch.Tensor]:
    """One weight file, safetensors or a pickle loaded with ``weights_only=True``."""
    return load_safetensors(path) if path.suffix == ".safetensors" else load_torch_bin(path)


def load_state_dict(model_dir: str | Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in checkpoint_files(Path(model_dir)):
        shard = read_shard(path)
        duplicated = state.keys() & shard.keys()
        if duplicated:
            raise CheckpointError(f"{path.name} repeats keys of another shard: {sorted(duplicated)[:5]}")
        state.update(shard)
    return state


def _shards(state: dict[str, torch.Tensor], max_shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def save_sharded(
    state: dict[str, torch.Tensor],
    model_dir: str | Path,
    *,
    safe_serialization: bool = True,
    max_shard_bytes: int = 10 * 2**30,
) -> list[Path]:
    """Write ``state`` as HF-style shards plus an index (a single file when it fits one shard)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {key: tensor.detach().contiguous().cpu() for key, tensor in state.items()}
    shards = _shards(state, max_shard_bytes)
    stem, suffix, index_name = (
        ("model", "safetensors", SAFETENSORS_INDEX) if safe_serialization else ("pytorch_model", "bin", BIN_INDEX)
    )
    if len(shards) == 1:
        names = [f"{stem}.{suffix}"]
    else:
        names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{suffix}" for i in range(len(shards))]
    written = []
    for name, shard in zip(names, shards, strict=True):
        path = model_dir / name
        if safe_serialization:
            save_file(shard, str(path), metadata={"format": "pt"})
        else:
            torch.save(shard, str(path))
        written.append(path)
    if len(shards) > 1:
        weight_map = {key: name for name, shard in zip(names, shards, strict=True) for key in shard}
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (model_dir / index_name).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return written


def describe_keys(keys: Iterable[str], limit: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")
