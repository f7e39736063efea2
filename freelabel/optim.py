"""Optimisation helpers shared by every trainer in freelabel (the toy CLIP's and the segmenter's)."""

from __future__ import annotations

import math

import torch


def warmup_cosine(progress: float, warmup_fraction: float) -> float:
    """Learning-rate factor in [0, 1] at ``progress`` in [0, 1] of training: linear warm-up over the first
    ``warmup_fraction``, then a cosine decay to 0."""
    if progress < warmup_fraction:
        return progress / warmup_fraction
    rest = (progress - warmup_fraction) / (1 - warmup_fraction)
    return 0.5 * (1 + math.cos(math.pi * min(rest, 1.0)))


def param_groups(model: torch.nn.Module, weight_decay: float, **options: float) -> list[dict]:
    """AdamW groups over ``model``'s trainable parameters: weight decay on matrices only (not on gains, biases or
    embeddings). ``options`` (e.g. ``lr``) are set on both groups."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 and "embedding" not in name else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay, **options},
            {"params": no_decay, "weight_decay": 0.0, **options}]
