"""Clicks, boxes and previous masks → region masks: SAM's image embedding once per frame, prompts after.

The flow of segment-anything's ``SamPredictor``, without its per-instance image state: ``encode`` returns a
``SamFrame`` that can be kept beside Osprey's features for the same frame, and ``segment`` decodes any
number of prompts about it in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from ..encoders import EncoderBackend, TorchEncoder, create_encoder
from ..frame_features import FrameFeatures
from ..image_processing import ImageInput, ImageLimits, to_rgb_array
from .modeling import SamConfig, SamImageEncoder, get_sam_preset, load_sam

MULTIMASK_MODES = ("best", "all", "single")
MASK_PROMPT_LOGIT = 8.0  # a binary prompt mask as logits: confident, as SAM's own outputs are well inside a shape


@dataclass
class SamFrame:
    """One image's SAM embedding and the sizes needed to map prompts in and masks out."""

    embedding: torch.Tensor  # (1, 256, h, w)
    image_hw: tuple[int, int]
    input_hw: tuple[int, int]  # the image resized to the longest side, before padding


@dataclass
class SegmentResult:
    """Per prompt: masks (N, K, H, W) bool at the image size, predicted IoU (N, K), low-res logits
    (N, K, 256, 256 at 1024 px) to feed back as ``mask_input``, and boxes (N, K, 4) x0, y0, x1, y1."""

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: torch.Tensor
    boxes: np.ndarray


@dataclass
class Prompt:
    """One object to segment: points (x, y in image pixels) with labels (1 = on it, 0 = not on it), and/or a
    box (x0, y0, x1, y1), and/or the low-res logits of a previous result for this object."""

    points: np.ndarray | None = None  # (P, 2)
    labels: np.ndarray | None = None  # (P,)
    box: np.ndarray | None = None  # (4,)
    mask_input: torch.Tensor | None = None  # (1, 256, 256) at 1024 px: SegmentResult.low_res_logits[i, k:k+1]


class SamSegmenter:
    def __init__(
        self,
        sam: Sam,
        image_limits: ImageLimits | None = None,
        encoder: EncoderBackend | None = None,
        preset: SamConfig | None = None,
    ) -> None:
        """``encoder``: a backend serving ``SamImageEncoder(sam.image_encoder)`` (default: plain torch);
        ``preset``: the model's configuration, when known (its recommended settings apply then)."""
        self.sam = sam.eval()
        self.preset = preset
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        self.image_limits = image_limits or ImageLimits()
        self.encoder = encoder or TorchEncoder(SamImageEncoder(sam.image_encoder))

    @classmethod
    def from_pretrained(
        cls,
        preset: str,
        checkpoint: str | Path | None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        encoder_backend: str = "torch",
        image_limits: ImageLimits | None = None,
    ) -> SamSegmenter:
        """``encoder_backend``: torch, compile, onnxruntime or tensorrt (falls back, logging why)."""
        sam = load_sam(preset, checkpoint, device=device, dtype=dtype)
        encoder = create_encoder(encoder_backend, SamImageEncoder(sam.image_encoder))
        return cls(sam, image_limits, encoder, get_sam_preset(preset))

    @property
    def device(self) -> torch.device:
        return self.sam.pixel_mean.device

    @property
    def decoder_dtype(self) -> torch.dtype:
        return self.sam.mask_decoder.iou_token.weight.dtype

    @torch.inference_mode()
    def encode(self, image: ImageInput) -> SamFrame:
        rgb = to_rgb_array(image)
        self.image_limits.check(*rgb.shape[:2])
        resized = self.transform.apply_image(rgb)
        pixels = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        embedding = self.encoder(self.sam.preprocess(pixels.float()))["image_embeddings"]
        return SamFrame(
            embedding=embedding.to(self.decoder_dtype), image_hw=rgb.shape[:2], input_hw=tuple(resized.shape[:2])
        )

    def frame(self, image: SamFrame | FrameFeatures | ImageInput) -> SamFrame:
        """The frame's embedding: given, cached in ``FrameFeatures`` (computed there on first use), or new."""
        if isinstance(image, SamFrame):
            return image
        if isinstance(image, FrameFeatures):
            return image.get("sam", self.encode)
        return self.encode(image)

    def segment(
        self, frame: SamFrame | FrameFeatures | ImageInput, prompts: list[Prompt], multimask: str = "best"
    ) -> SegmentResult:
        """Masks for each prompt, decoded as one batch. ``multimask``: ``best`` (of SAM's three, the one with
        the highest predicted IoU), ``all`` (all three), ``single`` (SAM's single-mask output)."""
        if multimask not in MULTIMASK_MODES:
            raise ValueError(f"multimask must be one of {', '.join(MULTIMASK_MODES)}, got {multimask!r}")
        if not prompts:
            raise ValueError("no prompt: give at least one point, box or previous mask")
        # Prompts are checked against the image's size before anything is encoded: bad ones cost nothing.
        if isinstance(frame, SamFrame | FrameFeatures):
            image_hw = frame.image_hw
        else:
            frame = to_rgb_array(frame)
            image_hw = frame.shape[0], frame.shape[1]
        points, labels, boxes, mask_input = self.prompt_tensors(prompts, image_hw)
        frame = self.frame(frame)
        low_res, iou = self.decode(frame, points, labels, boxes, mask_input, multimask != "single")
        if multimask == "best":
            best = iou.argmax(dim=1)
            rows = torch.arange(len(iou), device=iou.device)
            low_res, iou = low_res[rows, best][:, None], iou[rows, best][:, None]
        masks = self.upscale(frame, low_res)
        return SegmentResult(masks=masks, scores=iou.cpu().numpy(), low_res_logits=low_res, boxes=mask_boxes(masks))

    @torch.inference_mode()
    def decode(
        self,
        frame: SamFrame,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt tensors in the encoder's input frame → low-res logits (N, K, h, w) and predicted IoU (N, K),
        both fp32. The prompt encoder runs in fp32; its outputs are cast to the decoder's dtype."""
        dtype = self.decoder_dtype
        sparse, dense = self.sam.prompt_encoder(
            points=None if points is None else (points, labels), boxes=boxes, masks=mask_input
        )
        low_res, iou = self.sam.mask_decoder(
            image_embeddings=frame.embedding,
            image_pe=self.sam.prompt_encoder.get_dense_pe().to(dtype),
            sparse_prompt_embeddings=sparse.to(dtype),
            dense_prompt_embeddings=dense.to(dtype),
            multimask_output=multimask,
        )
        return low_res.float(), iou.float()

    def decode_prompt_embeddings(
        self, frame: SamFrame, embeddings: torch.Tensor, multimask: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts that are embeddings already (N, 256), e.g. LISA's projected ``[SEG]`` states → low-res
        logits (N, K, h, w) and predicted IoU (N, K), fp32.

        What LISA's patched prompt encoder does, without patching the package: the stock encoder with no
        prompt gives an empty sparse set and the no-mask dense embedding; each embedding becomes a one-token
        sparse prompt, and the dense one is repeated per prompt. Gradients flow (training uses this too).
        """
        dtype = self.decoder_dtype
        sparse, dense = self.sam.prompt_encoder(points=None, boxes=None, masks=None)
        sparse = torch.cat([sparse.expand(len(embeddings), -1, -1), embeddings[:, None].to(sparse.dtype)], dim=1)
        low_res, iou = self.sam.mask_decoder(
            image_embeddings=frame.embedding,
            image_pe=self.sam.prompt_encoder.get_dense_pe().to(dtype),
            sparse_prompt_embeddings=sparse.to(dtype),
            dense_prompt_embeddings=dense.expand(len(embeddings), -1, -1, -1).to(dtype),
            multimask_output=multimask,
        )
        return low_res.float(), iou.float()

    @torch.inference_mode()
    def upscale(self, frame: SamFrame, low_res: torch.Tensor) -> np.ndarray:
        """Low-res logits (N, K, h, w) → bool masks (N, K, H, W) at the image's size."""
        logits = self.sam.postprocess_masks(low_res.float(), frame.input_hw, frame.image_hw)
        return (logits > self.sam.mask_threshold).cpu().numpy()

    def mask_prompt(self, mask: np.ndarray) -> torch.Tensor:
        """A binary mask at the image's size (e.g. last frame's result for this object) as SAM's ``mask_input``:
        low-res logits (1, 256, 256 at 1024 px) in the padded frame, ±``MASK_PROMPT_LOGIT`` inside / outside."""
        mask = np.asarray(mask)
        if mask.ndim != 2 or not mask.size:
            raise ValueError(f"a prompt mask is one (H, W) binary mask, got shape {mask.shape}")
        if not mask.any():
            raise ValueError("the prompt mask is empty (no pixel set)")
        size = self.sam.image_encoder.img_size
        input_hw = self.transform.get_preprocess_shape(mask.shape[0], mask.shape[1], size)
        low = self.sam.prompt_encoder.mask_input_size
        resized = F.interpolate(torch.from_numpy(mask > 0).float()[None, None], size=input_hw, mode="area")
        padded = F.pad(resized, (0, size - input_hw[1], 0, size - input_hw[0]))
        inside = F.interpolate(padded, size=tuple(low), mode="area")[0]
        return (inside * 2 - 1) * MASK_PROMPT_LOGIT

    def prompt_tensors(
        self, prompts: list[Prompt], image_hw: tuple[int, int]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Check every prompt against the image, then map it to the encoder's input frame: the tensors SAM's
        prompt encoder takes (training uses them too). Prompts with fewer points are padded with label -1
        (SAM's "not a point"), so mixed prompts share one batch."""
        height, width = image_hw
        for i, prompt in enumerate(prompts):
            _check_prompt(i, prompt, height, width)
        kinds = {(p.points is not None, p.box is not None, p.mask_input is not None) for p in prompts}
        if len({k[1] for k in kinds}) > 1 or len({k[2] for k in kinds}) > 1:
            raise ValueError("in one batch, either every prompt has a box or none has; the same for mask_input")
        points = labels = boxes = mask_input = None
        if any(p.points is not None for p in prompts):
            most = max(len(p.points) for p in prompts if p.points is not None)
            coords = np.zeros((len(prompts), most, 2), np.float32)
            marks = np.full((len(prompts), most), -1, np.int64)
            for i, p in enumerate(prompts):
                if p.points is not None:
                    coords[i, : len(p.points)] = p.points
                    marks[i, : len(p.points)] = p.labels if p.labels is not None else 1
            points = torch.as_tensor(self.transform.apply_coords(coords, image_hw), device=self.device)
            labels = torch.as_tensor(marks, device=self.device)
        if prompts[0].box is not None:
            stacked = np.stack([np.asarray(p.box, np.float32) for p in prompts])
            boxes = torch.as_tensor(self.transform.apply_boxes(stacked, image_hw), device=self.device)
        if prompts[0].mask_input is not None:
            expected = tuple(self.sam.prompt_encoder.mask_input_size)
            shapes = {tuple(torch.as_tensor(p.mask_input).shape) for p in prompts}
            if shapes != {(1, *expected)}:
                raise ValueError(
                    f"mask_input must be a previous result's low-res logits (1, {expected[0]}, {expected[1]})"
                )
            mask_input = torch.stack([torch.as_tensor(p.mask_input) for p in prompts]).to(self.device, torch.float32)
        return points, labels, boxes, mask_input


def _check_prompt(index: int, prompt: Prompt, height: int, width: int) -> None:
    where = f"prompt {index}"
    if prompt.points is None and prompt.box is None and prompt.mask_input is None:
        raise ValueError(f"{where} is empty: give points, a box or a previous mask")
    if prompt.points is not None:
        points = np.asarray(prompt.points, np.float32)
        if points.ndim != 2 or points.shape[1] != 2 or not len(points):
            raise ValueError(f"{where}: points must be (P, 2) x, y pairs, got shape {points.shape}")
        outside = (points[:, 0] < 0) | (points[:, 0] >= width) | (points[:, 1] < 0) | (points[:, 1] >= height)
        if outside.any():
            x, y = points[outside][0]
            raise ValueError(f"{where}: point ({x:g}, {y:g}) lies outside the {width}x{height} image")
        if prompt.labels is not None:
            labels = np.asarray(prompt.labels)
            if labels.shape != (len(points),) or not np.isin(labels, (0, 1)).all():
                raise ValueError(f"{where}: labels must be one 0 (background) or 1 (object) per point")
        prompt.points = points
    if prompt.box is not None:
        box = np.asarray(prompt.box, np.float32)
        if box.shape != (4,):
            raise ValueError(f"{where}: a box is x0, y0, x1, y1, got shape {box.shape}")
        x0, y0, x1, y1 = box
        if not (x1 > x0 and y1 > y0):
            raise ValueError(
                f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty or inverted (need x1 > x0, y1 > y0)"
            )
        if x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0:
            raise ValueError(f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {width}x{height} image")
        prompt.box = box


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """x0, y0, x1, y1 (inclusive) of each mask in (..., H, W); all -1 for an empty mask."""
    flat = masks.reshape(-1, *masks.shape[-2:])
    out = np.full((len(flat), 4), -1, np.int64)
    for i, mask in enumerate(flat):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows):
            out[i] = cols[0], rows[0], cols[-1], rows[-1]
    return out.reshape(*masks.shape[:-2], 4)
