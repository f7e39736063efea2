"""Masks drawn over images for people: the palette blend (``blend_mask``, shared by ``query``, ``video --overlay``
and ``review``), downscaled overlays for thumbnails, and a legend naming the classes shown."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from freelabel.io.masks import IGNORE_INDEX, blend_mask, palette


def overlay_thumbnail(image: np.ndarray, mask: np.ndarray, size: int, opacity: float = 0.5) -> np.ndarray:
    """``blend_mask`` at thumbnail size: ``image`` ((H, W, 3) uint8 RGB) and ``mask`` ((H, W) uint8 class indices)
    shrunk so that the longer side is at most ``size`` (the image smoothly, the mask by nearest pixel, so no
    class is invented), then blended. Returns (h, w, 3) uint8."""
    height, width = mask.shape
    scale = min(1.0, size / max(height, width))
    small = (max(1, round(width * scale)), max(1, round(height * scale)))
    if small != (width, height):
        image = np.asarray(Image.fromarray(image).resize(small, Image.Resampling.BILINEAR, reducing_gap=2.0))
        mask = np.asarray(Image.fromarray(mask).resize(small, Image.Resampling.NEAREST))
    return blend_mask(image, mask, opacity)


def legend(classes: Sequence[str], indices: Sequence[int], width: int, row_height: int = 16) -> np.ndarray:
    """A legend strip naming ``classes[i]`` for each class index in ``indices`` (255 = ignore) beside its palette
    colour, in rows ``width`` pixels wide (wider when one name needs it). Returns (rows * row_height, max(width,
    widest entry), 3) uint8 RGB on white."""
    colours, font = palette(), ImageFont.load_default()
    entries = [(colours[i], "ignore" if i == IGNORE_INDEX else classes[i]) for i in indices]
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    swatch, gap = row_height - 4, 10
    sizes = [swatch + 4 + int(draw.textlength(name, font=font)) + gap for _, name in entries]
    width = max([width, *sizes])
    rows, x = [[]], 0
    for entry, size in zip(entries, sizes):
        if x + size > width and rows[-1]:
            rows.append([])
            x = 0
        rows[-1].append((entry, x))
        x += size
    strip = Image.new("RGB", (width, row_height * len(rows)), "white")
    draw = ImageDraw.Draw(strip)
    for row, placed in enumerate(rows):
        top = row * row_height
        for (colour, name), left in placed:
            draw.rectangle([left + 2, top + 2, left + 2 + swatch, top + 2 + swatch], fill=tuple(int(c) for c in colour),
                           outline="black")
            draw.text((left + swatch + 6, top + 2), name, fill="black", font=font)
    return np.asarray(strip)


def overlay_with_legend(image: np.ndarray, mask: np.ndarray, classes: Sequence[str],
                        opacity: float = 0.5) -> np.ndarray:
    """``blend_mask(image, mask, opacity)`` with a ``legend`` of the classes present (background left out)
    below it: (H + legend height, max(W, legend width), 3) uint8 RGB, padded white on the right when the legend is
    wider than the image."""
    present = [int(i) for i in np.unique(mask) if i != 0]
    blended = blend_mask(image, mask, opacity)
    if not present:
        return blended
    strip = legend(classes, present, image.shape[1])
    blended = np.pad(blended, ((0, 0), (0, strip.shape[1] - blended.shape[1]), (0, 0)), constant_values=255)
    return np.concatenate([blended, strip], axis=0)
