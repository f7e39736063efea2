"""Fusing the maps of several test-time views into one map per label."""

from __future__ import annotations

import math

import torch

from freelabel.pseudo.config import FUSIONS


def fuse(maps: torch.Tensor, how: str = "softmin", temperature: float = 0.1) -> torch.Tensor:
    """Fuse per-view maps (V, K, H, W) into (K, H, W).

    ``mean`` and ``max`` are what they say; ``softmin`` is the smoothed minimum -T log mean_v exp(-x_v / T):
    a pixel stays high only where the views agree, but one bad view does not zero it. It tends to the minimum
    as T -> 0 and to the mean as T grows.
    """
    if how == "mean":
        return maps.mean(dim=0)
    if how == "max":
        return maps.amax(dim=0)
    if how == "softmin":
        if temperature <= 0:
            raise ValueError(f"softmin temperature must be positive, got {temperature}")
        return -temperature * (torch.logsumexp(-maps / temperature, dim=0) - math.log(maps.shape[0]))
    raise ValueError(f"unknown fusion {how!r}; choose one of {', '.join(FUSIONS)}")
