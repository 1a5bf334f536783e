"""Image and mask preprocessing exactly as the released Osprey code does it.

Images: CLIP processor (shortest edge to S, bicubic; scale 1/255; CLIP mean/std; no crop), then a bilinear
resize to exactly S×S, so the aspect ratio is not kept. Masks stay at the image's original size: the
extractor resizes them to each feature map itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPImageProcessor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ImageInput = Image.Image | np.ndarray


def to_rgb_array(image: ImageInput) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a PIL image or an RGB / grayscale uint8 array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image array must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB or (H, W) grayscale, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image is empty: shape {array.shape}")
    return array


@dataclass(frozen=True)
class ImageLimits:
    """The largest images worth encoding.

    The released preprocessing resizes the *shortest* edge to S before squashing to S×S, so a thin image
    costs memory in proportion to its aspect ratio: 2×60000 asks 11 GiB, 2×4000 1.2 GB. Refuse such input
    up front instead of running out of memory. The defaults admit 8K frames and 32:1 range images.
    """

    max_pixels: int = 40_000_000
    max_aspect_ratio: float = 32.0

    def check(self, height: int, width: int) -> None:
        if height * width > self.max_pixels:
            raise ValueError(
                f"image is {width}x{height} = {height * width} pixels, more than the {self.max_pixels} allowed "
                "(max_image_pixels)"
            )
        aspect = max(height, width) / min(height, width)
        if aspect > self.max_aspect_ratio:
            raise ValueError(
                f"image is {width}x{height}: aspect ratio {aspect:.1f} exceeds {self.max_aspect_ratio:g} "
                "(max_aspect_ratio); crop or pad it first"
            )


class OspreyImageProcessor:
    """Turns an RGB image into the ``(1, 3, S, S)`` tensor the vision tower takes."""

    def __init__(self, image_size: int, limits: ImageLimits | None = None) -> None:
        self.image_size = image_size
        self.limits = limits or ImageLimits()
        self.clip = CLIPImageProcessor(
            do_resize=True,
            size={"shortest_edge": image_size},
            resample=Image.Resampling.BICUBIC,
            do_center_crop=False,
            do_rescale=True,
            rescale_factor=1 / 255,
            do_normalize=True,
            image_mean=list(CLIP_MEAN),
            image_std=list(CLIP_STD),
            do_convert_rgb=True,
        )

    def __call__(self, image: ImageInput) -> torch.Tensor:
        rgb = to_rgb_array(image)
        self.limits.check(*rgb.shape[:2])
        # Channels-last said explicitly: guessing takes a 1×N or 3×N image for channels-first.
        pixels = self.clip(images=rgb, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
        return F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)


def check_region_mask(index: int, mask: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """One region mask as bool (H, W); ValueError naming mask ``index`` if it is the wrong size, not binary or
    empty. For callers that must refuse a bad mask before deciding what to run (e.g. a region tracker)."""
    mask = np.asarray(mask)
    if mask.shape != tuple(image_hw):
        raise ValueError(f"mask {index} has shape {mask.shape}, the image is {tuple(image_hw)} (H, W)")
    if mask.dtype == bool:
        binary = mask
    else:
        values = np.unique(mask)
        if not (np.isin(values, (0, 1)).all() or np.isin(values, (0, 255)).all()):
            raise ValueError(
                f"mask {index} is not binary: values {values[:6].tolist()}{'...' if len(values) > 6 else ''} "
                "(expected 0/1, 0/255 or bool)"
            )
        binary = mask > 0
    if not binary.any():
        raise ValueError(f"mask {index} is empty (no pixel set)")
    return binary


def masks_to_tensor(masks: list[np.ndarray] | np.ndarray | torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Validate region masks and stack them as a float ``(N, H, W)`` tensor of zeros and ones.

    Accepted: bool, or numbers whose values are only 0 and 1 (or 0 and 255, the usual mono8 mask).
    Raises ``ValueError`` naming the offending mask otherwise.
    """
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    if isinstance(masks, np.ndarray):
        if masks.ndim == 2:
            masks = [masks]
        elif masks.ndim == 3:
            masks = list(masks)
        else:
            raise ValueError(f"masks must be (H, W) or (N, H, W), got shape {masks.shape}")
    if len(masks) == 0:
        raise ValueError("no masks given: describe at least one region")
    out = np.empty((len(masks), *image_hw), dtype=np.float32)
    for i, mask in enumerate(masks):
        out[i] = check_region_mask(i, mask, image_hw)
    return torch.from_numpy(out)
