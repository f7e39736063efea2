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


class ConfusionMatrix:
    """Pixel confusion counts over many images: rows are ground-truth classes, columns predictions.

    ``counts`` is (C, C + 1) int64: ``counts[t, p]`` labelled pixels of true class ``t`` predicted ``p``; the last
    column holds the pixels predicted no class of the list: ``ignore_index`` (not confident) or the value ``C`` (a
    class outside the list, e.g. a predicted name the ground truth does not know). Both count as misses of their
    ground-truth class, so abstaining never raises IoU. Ground-truth pixels equal to ``ignore_index`` are skipped.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.counts = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, prediction: np.ndarray, truth: np.ndarray) -> None:
        """Add one image: prediction and truth (H, W) integer class indices of one shape.

        truth: values in 0..C-1 or ``ignore_index``. prediction: values in 0..C-1, ``C`` (a class outside the
        list: wrong) or ``ignore_index``. Anything else raises ``ValueError``.
        """
        if prediction.shape != truth.shape:
            raise ValueError(f"prediction {prediction.shape} and ground truth {truth.shape} differ in shape")
        valid = truth != self.ignore_index
        truth, prediction = truth[valid].astype(np.int64), prediction[valid].astype(np.int64)
        if truth.size and truth.max() >= self.num_classes:
            raise ValueError(f"ground truth holds class {truth.max()} but only {self.num_classes} classes are known")
        outside = (prediction > self.num_classes) & (prediction != self.ignore_index)
        if outside.any():
            raise ValueError(f"prediction holds class {prediction[outside].max()}; only 0..{self.num_classes} "
                             f"({self.num_classes} = a class outside the list) and {self.ignore_index} are allowed")
        prediction = np.where(prediction == self.ignore_index, self.num_classes, prediction)
        self.counts += np.bincount(truth * (self.num_classes + 1) + prediction,
                                   minlength=self.num_classes * (self.num_classes + 1)).reshape(self.counts.shape)

    def iou(self) -> np.ndarray:
        """(C,) float64 IoU per class; NaN for a class absent from both truth and prediction."""
        true_positive = np.diag(self.counts[:, :self.num_classes]).astype(np.float64)
        union = self.counts.sum(axis=1) + self.counts[:, :self.num_classes].sum(axis=0) - true_positive
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, true_positive / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over classes that occur (in truth or prediction)."""
        return float(np.nanmean(self.iou()))

    def pixel_accuracy(self) -> float:
        """Fraction of labelled ground-truth pixels predicted right."""
        total = self.counts.sum()
        return float(np.trace(self.counts[:, :self.num_classes]) / total) if total else float("nan")

    def ignored_fraction(self) -> float:
        """Fraction of labelled ground-truth pixels predicted no class of the list: ignore, or a class outside
        the list (the counts do not tell these apart; with no outside class predicted it is the ignored share)."""
        total = self.counts.sum()
        return float(self.counts[:, -1].sum() / total) if total else float("nan")
