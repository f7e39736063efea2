"""Pixel-adaptive mask refinement (PAMR, Araslanov & Roth, CVPR 2020): each pixel's class probabilities become,
a few times over, the average of its neighbours' at several dilations, weighted by how alike their colours are
relative to the local colour spread. Batched, on any torch device."""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from freelabel.pseudo.config import PamrConfig
from freelabel.pseudo.crf import check_refinement_inputs


def _offsets(dilations: tuple[int, ...], center: bool) -> Iterator[tuple[int, int]]:
    """(dy, dx) of the 3 x 3 ring at each dilation, its centre included or not."""
    for d in dilations:
        for dy in (-d, 0, d):
            for dx in (-d, 0, d):
                if center or dy or dx:
                    yield dy, dx


def _shifted(x: torch.Tensor, dilations: tuple[int, ...], center: bool) -> Iterator[torch.Tensor]:
    """x: (B, C, H, W) -> for each offset of ``_offsets``, (B, C, H, W) holding each pixel's neighbour there
    (the image's border pixels repeated outside it, as in the paper's code)."""
    pad = max(dilations)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    height, width = x.shape[-2:]
    for dy, dx in _offsets(dilations, center):
        yield padded[..., pad + dy:pad + dy + height, pad + dx:pad + dx + width]


def pamr_affinities(images: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    """PAMR's affinity of each pixel i to its neighbours j: softmax over j of the channels' mean of
    -|I_i - I_j| / (0.1 sigma_i), sigma_i the colour channel's std over i's rings (centre included once per ring).

    images: (B, 3, H, W) float, any intensity scale (it cancels). Returns (B, 8 * len(dilations), H, W) float32,
    summing to 1 over the neighbours, in ``_offsets(dilations, center=False)`` order.
    """
    images = images.float()
    # sums over shifted views (slices of one padded copy), not stacks of them: (B, 3, H, W) at a time
    rings = list(_shifted(images, dilations, center=True))
    mean = sum(rings) / len(rings)
    spread = (sum((ring - mean).square() for ring in rings) / (len(rings) - 1)).sqrt()  # the unbiased std
    scale = 1e-8 + 0.1 * spread
    logits = torch.stack([-((images - n).abs() / scale).mean(dim=1)
                          for n in _shifted(images, dilations, center=False)], dim=1)
    return torch.softmax(logits, dim=1)


def pamr(probabilities: torch.Tensor, images: torch.Tensor, config: PamrConfig | None = None) -> torch.Tensor:
    """Refine class probabilities with PAMR, on their device.

    probabilities: (B, K, H, W) float, per pixel a distribution over K classes (a class at 0 everywhere, such as a
    padding class, stays 0). images: (B, H, W, 3) uint8 RGB on the same device. Returns (B, K, H, W) float32, still
    summing to 1 over K: each iteration replaces a pixel's probabilities by their affinity-weighted average over
    its neighbours (``pamr_affinities``).
    """
    config = config or PamrConfig()
    check_refinement_inputs(probabilities, images)
    affinities = pamr_affinities(images.permute(0, 3, 1, 2), config.dilations)
    q = probabilities.float()
    for _ in range(config.iterations):
        # one neighbour at a time: a (B, K, P, H, W) stack of shifted copies would cost P times the memory
        q = sum(affinities[:, p:p + 1] * n for p, n in enumerate(_shifted(q, config.dilations, center=False)))
    return q
