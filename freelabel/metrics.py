"""Scores for image-level label predictions."""

from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Average precision per class.

    scores: (N, K) float, higher = more likely present. targets: (N, K) bool, the classes truly present.
    Returns (K,) float64 in [0, 1]; NaN for a class with no positive image.
    """
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=bool)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores and targets must both be (N, K), got {scores.shape} and {targets.shape}")
    result = np.full(scores.shape[1], np.nan)
    for k in range(scores.shape[1]):
        positives = targets[:, k].sum()
        if positives == 0:
            continue
        order = np.argsort(-scores[:, k], kind="stable")
        hits = targets[order, k]
        precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
        result[k] = precision_at_hit.sum() / positives
    return result
