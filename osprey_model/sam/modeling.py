"""SAM presets built from the PyPI ``segment-anything`` package's modules, and safe checkpoint loading.

Presets are data, as in segment-anything's ``build_sam.py``: the released ``vit_h`` / ``vit_l`` / ``vit_b``
and a ``tiny`` one for the embedded default and tests. The package's own loader calls ``torch.load`` with
neither ``map_location`` nor ``weights_only`` (a CUDA-saved file fails on a CPU, and a pickle can run
code), so we build without weights and load the state dict ourselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ..checkpoint_io import CheckpointError, describe_keys, load_safetensors, load_torch_bin
from ..encoders.interface import ImageEncoderModule

logger = logging.getLogger(__name__)

PROMPT_EMBED_DIM = 256
PATCH_SIZE = 16


@dataclass(frozen=True)
class SamConfig:
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16  # the released models' (64x64 embedding at 1024 px)
    window_size: int = 14
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    # "Describe everything" thresholds that suit the model: SAM's for the released ones; the tiny one's were
    # chosen on validation scenes of the shapes world (training.sam_card --sweep).
    everything_pred_iou_thresh: float = 0.88
    everything_stability_thresh: float = 0.95
    everything_nms_thresh: float = 0.7
    pixel_mean: tuple[float, float, float] = field(default=(123.675, 116.28, 103.53))
    pixel_std: tuple[float, float, float] = field(default=(58.395, 57.12, 57.375))


SAM_PRESETS: dict[str, SamConfig] = {
    # The released checkpoints: sam_vit_h_4b8939.pth, sam_vit_l_0b3195.pth, sam_vit_b_01ec64.pth.
    "vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11)),
    # Same code paths at toy size (4 M parameters): 256 px input, 16x16 embedding, 64x64 low-res masks; the
    # decoder's MLP is 512 wide (2048 released) so the shipped checkpoint stays small.
    "tiny": SamConfig(
        128,
        4,
        4,
        (1, 3),
        image_size=256,
        window_size=4,
        decoder_mlp_dim=512,
        everything_pred_iou_thresh=0.5,
        everything_stability_thresh=0.6,
        everything_nms_thresh=0.5,
    ),
}


def get_sam_preset(name: str) -> SamConfig:
    try:
        return SAM_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown SAM preset {name!r}; choose one of {', '.join(SAM_PRESETS)}") from None


def build_sam(config: SamConfig) -> Sam:
    """A SAM with random weights, composed as segment-anything's ``_build_sam`` composes it."""
    embedding = config.image_size // config.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_num_heads,
            mlp_ratio=4,
            out_chans=PROMPT_EMBED_DIM,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=config.window_size,
            global_attn_indexes=config.encoder_global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_EMBED_DIM,
            image_embedding_size=(embedding, embedding),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=PROMPT_EMBED_DIM,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=8,
            ),
            transformer_dim=PROMPT_EMBED_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=list(config.pixel_mean),
        pixel_std=list(config.pixel_std),
    )
    return sam.eval()


class SamImageEncoder(ImageEncoderModule):
    """SAM's ViT as an image encoder that the encoder backends serve (ONNX Runtime, TensorRT, compile), as
    they serve Osprey's ConvNeXt: normalised, padded pixels (B, 3, S, S) → ``image_embeddings``."""

    graph_name = "sam-vit"
    output_names = ("image_embeddings",)

    def __init__(self, vit: ImageEncoderViT) -> None:
        super().__init__()
        self.vit = vit

    @property
    def input_size(self) -> int:
        return self.vit.img_size

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image_embeddings": self.vit(pixel_values)}


def load_sam_state_dict(sam: Sam, path: str | Path) -> None:
    """A released-layout SAM file (a plain state dict: ``.pth`` / ``.bin`` pickle loaded with
    ``weights_only=True``, or safetensors); every key must match."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"SAM weights not found at {path}: download sam_vit_h_4b8939.pth (or vit_l / vit_b) yourself"
        )
    state = load_safetensors(path) if path.suffix == ".safetensors" else load_torch_bin(path)
    try:
        result = sam.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches: a file of another preset
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise CheckpointError(f"{path} does not match this SAM preset: {first[0].strip()} ...") from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not match this SAM preset: missing {describe_keys(result.missing_keys) or 'none'}; "
            f"unexpected {describe_keys(result.unexpected_keys) or 'none'}"
        )


def load_sam(
    preset: str,
    checkpoint: str | Path | None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Sam:
    """The preset's SAM with the file's weights (random weights when ``checkpoint`` is None), served in
    ``dtype`` with the parts that must stay fp32 kept so (``serve_sam``)."""
    with torch.device("meta") if checkpoint is not None else torch.device("cpu"):
        sam = build_sam(get_sam_preset(preset))
    if checkpoint is not None:
        sam.to_empty(device="cpu")
        load_sam_state_dict(sam, checkpoint)
    return serve_sam(sam, get_sam_preset(preset), device=device, dtype=dtype)


def serve_sam(sam: Sam, config: SamConfig, *, device: str | torch.device, dtype: torch.dtype) -> Sam:
    """``sam`` on ``device`` in ``dtype``, except what must stay fp32, as the released code keeps it:

    - the prompt encoder: its random Fourier features of point coordinates lose pixels in bf16 (8 bits of
      mantissa over a 1024-px frame); what it returns is cast for the decoder;
    - the pixel mean / std (non-persistent buffers, in no file): rounded to bf16, 123.675 becomes 123.5;
    - in fp16 the whole model: the ViT's activations overflow fp16 (the released code runs its neck in fp32
      for that reason), so fp16 serving gets an fp32 SAM, said in the log.
    """
    if dtype == torch.float16:
        logger.warning("SAM runs in float32 beside a float16 model: its ViT overflows in float16")
        dtype = torch.float32
    sam = sam.to(device=device, dtype=dtype)
    sam.prompt_encoder.float()
    sam.pixel_mean = torch.tensor(config.pixel_mean, device=device).view(-1, 1, 1)
    sam.pixel_std = torch.tensor(config.pixel_std, device=device).view(-1, 1, 1)
    return sam.eval()
