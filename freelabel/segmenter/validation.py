"""Validating a segmenter in training: mIoU against the held-out images' pseudo-masks, and against real masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from freelabel.errors import FreelabelError
from freelabel.io.images import read_image
from freelabel.io.labels import class_lookup, read_classes
from freelabel.io.masks import IGNORE_INDEX, read_mask
from freelabel.metrics import ConfusionMatrix
from freelabel.segmenter.data import PseudoMaskSet, vocabulary_lookup
from freelabel.segmenter.predictor import Segmenter


class ValidationSet:
    """Validation images and their masks; lookups: per mask, the (256,) table from its values to the vocabulary's
    index (255 ignored)."""

    def __init__(self, images: list[Path], masks: list[Path], lookups: list[np.ndarray], max_pixels: int | None):
        self.images, self.masks, self.lookups, self.max_pixels = images, masks, lookups, max_pixels

    def score(self, segmenter: Segmenter, vocabulary: list[str]) -> dict[str, float]:
        """mIoU of the segmenter's own selection and of the masks' own labels given (ignored = wrong)."""
        own, given = ConfusionMatrix(len(vocabulary) + 1), ConfusionMatrix(len(vocabulary) + 1)
        names = ["background", *vocabulary]
        for image_path, mask_path, lookup in zip(self.images, self.masks, self.lookups):
            try:
                image, truth = read_image(image_path, self.max_pixels), lookup[read_mask(mask_path)]
            except FreelabelError:
                continue  # reported by the training loader when it meets the file
            if truth.shape != image.shape[:2]:
                continue
            present = [vocabulary[i - 1] for i in np.unique(truth) if 0 < i < IGNORE_INDEX]
            try:
                segmenter.set_image(image)
                results = [segmenter.segment(labels) if labels != [] else None for labels in (None, present)]
            except (FreelabelError, RuntimeError, MemoryError):
                continue  # one image's problem (e.g. out of memory) does not end the training run
            for matrix, result in zip((own, given), results):
                if result is None:  # no label to give: all background
                    matrix.update(np.zeros_like(truth), truth)
                    continue
                to_vocabulary = class_lookup(["background", *result.labels], names, unknown=len(names))
                matrix.update(to_vocabulary[result.mask], truth)
        return {"miou": round(own.miou(), 4), "miou_given_labels": round(given.miou(), 4)}


def validation_sets(data: PseudoMaskSet, val_indices: list[int], lookup: np.ndarray, vocabulary: list[str],
                    val_masks: str | None, max_pixels: int | None) -> dict[str, ValidationSet]:
    """The sets a run validates on, by name: ``val`` (the held-out images' pseudo-masks, when any are held out) and
    ``val_masks`` (the folder of real masks named like the training images, when given). lookup: the pseudo-masks'
    class index to the vocabulary's (``vocabulary_lookup``)."""
    sets = {}
    if val_indices:
        sets["val"] = ValidationSet([data.image_path(i) for i in val_indices], [data.masks[i] for i in val_indices],
                                    [data.mask_lookup(i, lookup) for i in val_indices], max_pixels)
    if val_masks:
        folder = Path(val_masks)
        classes = read_classes(folder / "classes.txt") if (folder / "classes.txt").is_file() else data.classes
        pairs = [(data.image_path(i), folder / Path(name).with_suffix(".png")) for i, name in enumerate(data.names)]
        pairs = [(image, mask) for image, mask in pairs if mask.is_file()]
        if not pairs:
            raise FreelabelError(f"--val-masks {folder} holds no mask named like the training images")
        sets["val_masks"] = ValidationSet([p[0] for p in pairs], [p[1] for p in pairs],
                                          [vocabulary_lookup(classes, vocabulary)] * len(pairs), max_pixels)
    return sets
