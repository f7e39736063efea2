"""Test-time views of an image (scales, horizontal flip, sliding windows) and mapping their outputs back to image
coordinates."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


MAX_ASPECT = 4  # a view's long side is at most this many times the base size (see plan_views)


@dataclass(frozen=True)
class View:
    """One test-time view: the image resized to ``size`` (H, W), maybe flipped, cut into ``window``-sized crops
    whose top-left corners are ``crops`` (one crop covering the whole view when it fits the window)."""

    scale: float
    flip: bool
    size: tuple[int, int]
    window: tuple[int, int]
    crops: tuple[tuple[int, int], ...]


def _multiple(value: float, step: int) -> int:
    return max(step, int(round(value / step)) * step)


def _starts(length: int, window: int) -> list[int]:
    if length <= window:
        return [0]
    count = math.ceil((length - window) / (window / 2)) + 1  # stride of half a window
    return sorted({round(i * (length - window) / (count - 1)) for i in range(count)})


def plan_views(height: int, width: int, base_size: int, scales: tuple[float, ...], flip: bool, patch: int,
               window: int | None) -> list[View]:
    """The views of an image of (height, width).

    base_size: the short side of the scale-1 view in pixels, unless the image is more than ``MAX_ASPECT`` times
    longer than wide (or the reverse): then the long side is ``MAX_ASPECT x base_size``, so a view never grows with
    the aspect ratio (a 20000 x 20 strip gets a 896 x 16 view, not 224 x 224000). Every view side is a multiple of
    ``patch``. window: crop side for views larger than it (stride half a window); None processes each view whole.
    """
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {scales}")
    views = []
    # pixels of the scale-1 view per image pixel
    factor = min(base_size / min(height, width), MAX_ASPECT * base_size / max(height, width))
    for scale in scales:
        size = (_multiple(height * factor * scale, patch), _multiple(width * factor * scale, patch))
        if window is None:
            crop, crops = size, ((0, 0),)
        else:
            crop = (min(size[0], _multiple(window, patch)), min(size[1], _multiple(window, patch)))
            crops = tuple((y, x) for y in _starts(size[0], crop[0]) for x in _starts(size[1], crop[1]))
        for flipped in ((False, True) if flip else (False,)):
            views.append(View(scale, flipped, size, crop, crops))
    return views


def view_crops(image: torch.Tensor, views: list[View], interpolation: str = "bilinear") -> list[torch.Tensor]:
    """image: (3, H, W) normalised float. Returns each view's crops, (n_crops, 3, window_h, window_w) per view,
    resized with ``interpolation`` ("bilinear" or "bicubic", antialiased: the model's own preprocessing); views of
    one size (a view and its flip) share a single resize."""
    resized: dict[tuple[int, int], torch.Tensor] = {}
    out = []
    for view in views:
        if view.size not in resized:
            resized[view.size] = F.interpolate(image[None], size=view.size, mode=interpolation, antialias=True,
                                               align_corners=False)[0]
        x = resized[view.size].flip(-1) if view.flip else resized[view.size]
        wh, ww = view.window
        out.append(torch.stack([x[:, y:y + wh, x0:x0 + ww] for y, x0 in view.crops]))
    return out


def view_to_image(crop_maps: torch.Tensor, view: View, size: tuple[int, int]) -> torch.Tensor:
    """Map per-crop maps back into image coordinates.

    crop_maps: (n_crops, K, h, w) at any resolution. The flip is undone and the view resampled bilinearly to
    ``size`` = (height, width), any grid over the whole image; overlapping crops are stitched at the view's
    pixel resolution first and averaged. Returns (K, height, width) float32.
    """
    maps = crop_maps.float()
    if len(view.crops) > 1:
        wh, ww = view.window
        maps = F.interpolate(maps, size=(wh, ww), mode="bilinear", align_corners=False)
        canvas = maps.new_zeros((1, maps.shape[1], *view.size))
        count = maps.new_zeros((1, 1, *view.size))
        for crop, (y, x) in zip(maps, view.crops):
            canvas[0, :, y:y + wh, x:x + ww] += crop
            count[0, :, y:y + wh, x:x + ww] += 1
        maps = canvas / count
    if view.flip:
        maps = maps.flip(-1)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[0]
