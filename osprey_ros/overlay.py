"""The annotated overlay for RViz / rqt: masks tinted in distinct colours, boxes and labels drawn."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .region_describer import RegionResult

PALETTE = np.array(
    [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
     (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40)],
    dtype=np.float32,
)  # fmt: skip


def draw_overlay(
    rgb: np.ndarray, masks: list[np.ndarray], regions: list[RegionResult], alpha: float = 0.45
) -> np.ndarray:
    """An (H, W, 3) uint8 image the size of ``rgb``."""
    tinted = rgb.astype(np.float32)
    for i, mask in enumerate(masks):
        tinted[mask] = (1 - alpha) * tinted[mask] + alpha * PALETTE[i % len(PALETTE)]
    canvas = Image.fromarray(tinted.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, region in enumerate(regions):
        colour = tuple(int(c) for c in PALETTE[i % len(PALETTE)])
        x, y, w, h = region.bbox
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=colour, width=2)
        text = f"{region.id}: {region.label}"[:60]
        left, top, right, bottom = draw.textbbox((x + 2, y + 2), text, font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(0, 0, 0))
        draw.text((x + 2, y + 2), text, fill=colour, font=font)
    return np.asarray(canvas)
