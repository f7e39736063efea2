"""How well a CLIP model knows the toy world: zero-shot classification and multi-label ranking."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from freelabel.clip.classify import label_similarities
from freelabel.clip.loading import LoadedClip
from freelabel.metrics import average_precision
from freelabel.toy.world import CLASS_NAMES, CLASSES, ToyScene


def zero_shot_report(clip: LoadedClip, scenes: Sequence[ToyScene]) -> dict[str, float]:
    """Zero-shot top-1 over all toy classes on single-object scenes, and per attribute.

    Returns {"top1", "colour", "shape", "texture"}: fractions in [0, 1] of scenes whose best-scoring class is
    right, or right in that attribute.
    """
    if any(len(scene.labels) != 1 for scene in scenes):
        raise ValueError("zero_shot_report needs single-object scenes")
    predicted = label_similarities(clip, np.stack([s.image for s in scenes]), CLASS_NAMES).argmax(axis=1)
    return class_accuracy(predicted, [CLASS_NAMES.index(s.labels[0]) for s in scenes])


def class_accuracy(predicted: Sequence[int], truth: Sequence[int]) -> dict[str, float]:
    """Accuracy of predicted toy class indices (into ``CLASSES``) against the true ones, overall and per attribute.

    Returns {"top1", "colour", "shape", "texture"}: fractions in [0, 1] of predictions that are right, or right in
    that attribute.
    """
    predicted, truth = list(predicted), list(truth)
    report = {"top1": float(np.mean(np.asarray(predicted) == np.asarray(truth)))}
    for attribute in ("colour", "shape", "texture"):
        right = [getattr(CLASSES[p], attribute) == getattr(CLASSES[t], attribute) for p, t in zip(predicted, truth)]
        report[attribute] = float(np.mean(right))
    return report


def multi_label_map(clip: LoadedClip, scenes: Sequence[ToyScene]) -> float:
    """Mean over classes of the average precision of label scores on (multi-object) scenes, in [0, 1]."""
    scores = label_similarities(clip, np.stack([s.image for s in scenes]), CLASS_NAMES)
    targets = np.array([[name in s.labels for name in CLASS_NAMES] for s in scenes])
    return float(np.nanmean(average_precision(scores, targets)))
