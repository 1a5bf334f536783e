"""Create a randomly initialised ``tiny`` Osprey checkpoint in the released layout.

For tests and for the demo: everything a released checkpoint folder holds (config.json, weights,
tokenizer, an ``open_clip_pytorch_model.bin``), at toy widths. The tokenizer is LLaMA-2's (Vicuna v1.5's
vocabulary), taken offline from the ``wordllama`` wheel.
"""

from __future__ import annotations

import argparse
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import LlamaTokenizerFast

from .config import OspreyConfig, get_preset
from .modeling_osprey import OspreyForCausalLM

CLIP_FILE = "open_clip_pytorch_model.bin"


def llama2_tokenizer() -> LlamaTokenizerFast:
    try:
        path = files("wordllama") / "tokenizers" / "l2_supercat_tokenizer_config.json"
    except ModuleNotFoundError as exc:
        raise RuntimeError("the LLaMA-2 tokenizer comes from the 'wordllama' wheel: pip install wordllama") from exc
    tokenizer = LlamaTokenizerFast(
        tokenizer_file=str(path), bos_token="<s>", eos_token="</s>", unk_token="<unk>", legacy=True
    )
    tokenizer.pad_token = tokenizer.unk_token  # as Vicuna's training code does
    return tokenizer


def save_open_clip_file(model: OspreyForCausalLM, path: Path) -> None:
    """The vision tower as open_clip stores it (``visual.*``), plus a text-tower key that loaders skip.

    A ``.safetensors`` path writes safetensors, anything else a torch pickle like the released file.
    """
    state = {f"visual.{k}": v.contiguous() for k, v in model.vision_tower.visual.state_dict().items()}
    state["logit_scale"] = torch.tensor(4.6052)
    if Path(path).suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)


def create_tiny_checkpoint(
    out_dir: str | Path,
    seed: int = 0,
    *,
    config: OspreyConfig | None = None,
    safe_serialization: bool = True,
    max_shard_bytes: int = 10 * 2**30,
) -> Path:
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    config = config or get_preset("tiny")
    config.mm_vision_tower = CLIP_FILE
    model = OspreyForCausalLM(config)
    model.save_pretrained(out_dir, safe_serialization=safe_serialization, max_shard_bytes=max_shard_bytes)
    save_open_clip_file(model, out_dir / CLIP_FILE)
    llama2_tokenizer().save_pretrained(out_dir)
    return out_dir


def write_demo_inputs(out_dir: str | Path, seed: int = 0) -> tuple[Path, list[Path]]:
    """A 320×240 picture with two overlapping shapes and their masks as PNG files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = 240, 320
    yy, xx = np.mgrid[:height, :width]
    disk = (yy - 110) ** 2 + (xx - 130) ** 2 < 70**2
    square = (np.abs(yy - 150) < 55) & (np.abs(xx - 210) < 55)
    disk_visible = disk & ~square  # the square lies on top of the disk
    image = np.full((height, width, 3), 235, np.uint8) + rng.integers(0, 10, (height, width, 3), dtype=np.uint8)
    image[disk_visible] = (220, 40, 40)
    image[square] = (40, 80, 220)
    paths = [out_dir / "mask_red_disk.png", out_dir / "mask_blue_square.png"]
    for path, mask in zip(paths, (disk_visible, square), strict=True):
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    image_path = out_dir / "shapes.png"
    Image.fromarray(image).save(image_path)
    return image_path, paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="checkpoint folder to create")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo-inputs", type=Path, help="also write a demo image and masks here")
    args = parser.parse_args()
    create_tiny_checkpoint(args.out, args.seed)
    print(f"tiny Osprey checkpoint written to {args.out}")
    if args.demo_inputs:
        image, masks = write_demo_inputs(args.demo_inputs, args.seed)
        print(f"demo image {image}, masks {' '.join(map(str, masks))}")


if __name__ == "__main__":
    main()
