"""Where the embedded default checkpoints live (tiny Osprey, tiny SAM, tiny LISA), so the node and the demos
run with no weights given."""

from __future__ import annotations

from pathlib import Path

import torch

EMBEDDED_CHECKPOINT = Path(__file__).parent / "checkpoints" / "tiny-shapes"
EMBEDDED_SAM = Path(__file__).parent / "checkpoints" / "tiny-sam" / "sam_tiny.safetensors"
EMBEDDED_LISA = Path(__file__).parent / "checkpoints" / "tiny-lisa" / "LISA-tiny"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_checkpoint() -> Path:
    if not (EMBEDDED_CHECKPOINT / "config.json").is_file():
        raise FileNotFoundError(
            f"no embedded checkpoint at {EMBEDDED_CHECKPOINT}: set model_dir (e.g. a folder made by "
            "`osprey-make-tiny --out DIR`, or the released Osprey-7b)"
        )
    return EMBEDDED_CHECKPOINT


def default_sam_checkpoint() -> Path:
    """The embedded tiny SAM (preset ``tiny``), trained by ``training.train_tiny_sam``."""
    if not EMBEDDED_SAM.is_file():
        raise FileNotFoundError(
            f"no embedded SAM at {EMBEDDED_SAM}: set sam_checkpoint (e.g. sam_vit_h_4b8939.pth with sam_preset "
            "vit_h), or sam_preset none"
        )
    return EMBEDDED_SAM


def default_lisa_checkpoint() -> Path:
    """The embedded tiny LISA (its CLIP tower's folder beside it), trained by ``training.train_tiny_lisa``."""
    if not (EMBEDDED_LISA / "config.json").is_file():
        raise FileNotFoundError(f"no embedded LISA at {EMBEDDED_LISA}: give a LISA checkpoint folder")
    return EMBEDDED_LISA


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}") from None
