"""The last stages: label scores -> probabilities over [background, *labels] -> a mask with ignore."""

from __future__ import annotations

import torch

from freelabel.io.masks import IGNORE_INDEX


def background_probabilities(scores: torch.Tensor, negatives: torch.Tensor, background_threshold: float,
                             sharpness: float) -> torch.Tensor:
    """Per-pixel distributions over [background, *labels].

    scores: (K, H, W) float in [0, 1], each label's fused map. negatives: (N, H, W) float in [0, 1], the maps of
    background words (N may be 0). Background scores ``background_threshold`` everywhere, or the strongest
    background word where that is higher; scores x ``sharpness`` go through a softmax.
    Returns (K + 1, H, W) float32 summing to 1 over the first dimension, on the scores' device.
    """
    background = torch.full_like(scores[:1], background_threshold)
    if len(negatives):
        background = torch.maximum(background, negatives.amax(dim=0, keepdim=True))
    return torch.softmax(torch.cat([background, scores]).float() * sharpness, dim=0)


def confident_mask(probabilities: torch.Tensor, ignore_threshold: float) -> torch.Tensor:
    """The argmax class per pixel, or ``IGNORE_INDEX`` (255) where its probability is below ``ignore_threshold``.

    probabilities: (K + 1, H, W) float, K < 255. Returns (H, W) uint8 on the same device: 0 background, k the
    k-th label, 255 ignore.
    """
    confidence, mask = probabilities.max(dim=0)
    mask = mask.to(torch.uint8)
    mask[confidence < ignore_threshold] = IGNORE_INDEX
    return mask
