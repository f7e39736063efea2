"""Class-index masks as palette PNGs."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from freelabel.io.files import atomic_path
from freelabel.io.images import ImageReadError


IGNORE_INDEX = 255


def palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour palette: (n, 3) uint8, index 0 black; 255 is drawn white (ignore)."""
    colours = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours[index] = (r, g, b)
    if n > IGNORE_INDEX:
        colours[IGNORE_INDEX] = (255, 255, 255)
    return colours


def blend_mask(image: np.ndarray, mask: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """``image`` ((H, W, 3) uint8 RGB) with the palette colour of each pixel's class in ``mask`` ((H, W) uint8)
    blended in at ``opacity``; background (0) is left as it is. Returns (H, W, 3) uint8."""
    colours = palette()[mask].astype(np.float32)
    blended = (1 - opacity) * image.astype(np.float32) + opacity * colours
    return np.where((mask > 0)[..., None], blended.round(), image).astype(np.uint8)


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write an (H, W) uint8 class-index mask as a palette PNG (pixel value = class index) atomically."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"expected (H, W) uint8 mask, got {mask.shape} {mask.dtype}")
    image = Image.fromarray(mask, mode="P")
    image.putpalette(palette().tobytes())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a class-index mask PNG as (H, W) uint8 (palette indices, not colours)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise ImageReadError(f"{path} is a {image.mode} image, not a class-index (P or L) mask")
            return np.asarray(image, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ImageReadError(f"cannot read mask {path}: {error}") from None
