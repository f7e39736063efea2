"""What every model that segments images answers (``Segmentation``) and what it must do (``ImageSegmenter``):
the ``Labeler`` (pseudo-masks from CLIP maps) and the trained ``Segmenter`` both are one, so the folder jobs, the
free-text queries and video key frames take either."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from freelabel.errors import FreelabelError


@dataclass
class Segmentation:
    """What ``Labeler.segment`` (and ``Segmenter.segment``) returns.

    labels: the K queried labels. scores: (K, H, W) float32 in [0, 1], each label's fused map scaled per image
    (a segmenter's: its per-label pixel probabilities). probabilities: (K + 1, H, W) float32, per pixel a
    distribution over [background, *labels] (after the CRF if one ran). mask: (H, W) uint8, 0 = background,
    k = labels[k - 1], 255 = ignore (not confident). label_scores: (K,) float32 in [0, 1], each label's
    image-level presence probability from a segmenter's multi-label head; None from the ``Labeler``.
    """

    labels: list[str]
    scores: np.ndarray
    probabilities: np.ndarray
    mask: np.ndarray
    label_scores: np.ndarray | None = None


class ImageSegmenter(Protocol):
    """What a folder job, a query or a video key frame needs of a model."""

    def set_image(self, image: np.ndarray) -> None:
        """Cache the features of an (H, W, 3) uint8 image."""

    def segment(self, labels: Sequence[str]) -> Segmentation:
        """Masks for ``labels`` in the cached image (empty: labels the model selects, where it can)."""

    def segment_batch(self, images: Sequence[np.ndarray], labels: Sequence[Sequence[str]]) -> list[Segmentation]:
        """Masks for several (H, W, 3) uint8 images at once (sizes may differ), ``images[i]`` with its own
        ``labels[i]`` (empty: labels the model selects, where it can): per image the same result as
        ``set_image(images[i])`` then ``segment(labels[i])``, with the work batched across images. A bad image
        raises what ``set_image`` raises, before any work. The image cached by ``set_image`` is left as it was."""

    def prepare_labels(self, labels: Sequence[str]) -> None:
        """Encode labels ahead of time, in batches."""


def check_labels(labels: Sequence[str] | None, allow_empty: bool = False) -> list[str]:
    """``labels`` as a list; ``FreelabelError`` unless it is a sequence (not a string) of non-empty strings, and
    not empty unless ``allow_empty`` (None counts as empty)."""
    given = [] if labels is None else labels
    if (isinstance(given, str) or (not given and not allow_empty)
            or any(not isinstance(label, str) or not label.strip() for label in given)):
        raise FreelabelError(f"labels must be non-empty strings, got {labels!r}")
    return list(given)


def check_batch(images: Sequence[np.ndarray], labels: Sequence[Sequence[str]]) -> None:
    """``FreelabelError`` unless ``labels`` holds one label list per image."""
    if len(images) != len(labels):
        raise FreelabelError(f"segment_batch needs one label list per image, got {len(images)} images and "
                             f"{len(labels)} label lists")
