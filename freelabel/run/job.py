"""The per-image unit of work of ``freelabel generate``: read, segment, map to the global class index, write."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from freelabel.errors import FreelabelError
from freelabel.io.files import write_npz
from freelabel.io.images import MAX_PIXELS, read_image, write_image
from freelabel.io.labels import class_lookup
from freelabel.io.masks import IGNORE_INDEX, write_mask
from freelabel.io.overlay import overlay_with_legend
from freelabel.segmentation import ImageSegmenter


class ItemError(FreelabelError):
    """One item (image) could not be done; the run goes on. ``stage`` says where: read, segment or write."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


@dataclass(frozen=True)
class ImageJob:
    """One image to label; plain data, so a job can be sent to another process."""

    name: str  # path relative to the image folder, as in the manifest
    image_path: Path  # where to read it
    labels: tuple[str, ...]  # its image-level labels, in the order the model sees them (empty: it selects)
    mask_path: Path  # where its mask goes (palette PNG, values index the global classes)
    scores_path: Path | None  # where its float16 probabilities go (.npz), or None
    overlay_path: Path | None = None  # where its mask drawn over it goes (RGB PNG, with a legend), or None

    def outputs(self) -> list[Path]:
        """Every file the job writes: it is done only when all of them exist."""
        return [path for path in (self.mask_path, self.scores_path, self.overlay_path) if path is not None]


def run_job(model: ImageSegmenter, job: ImageJob, classes: Sequence[str], image: np.ndarray | None = None,
            max_pixels: int | None = MAX_PIXELS) -> dict[str, Any]:
    """Label one image and write its outputs atomically: the scores and the overlay first, then the mask.

    classes: the global class names (index 0 background); the mask's values index them. image: the (H, W, 3)
    uint8 image if already read (by a prefetching loop), else it is read from ``job.image_path`` (at most
    ``max_pixels`` pixels). Returns the manifest entry ``{"status": "done", "labels": [...], "ignored_fraction":
    float in [0, 1]}``. Raises ``ItemError`` naming the stage that failed.
    """
    try:
        image = read_image(job.image_path, max_pixels) if image is None else image
    except FreelabelError as error:
        raise ItemError("read", str(error)) from None
    try:
        model.set_image(image)
        result = model.segment(job.labels)
    except (FreelabelError, ValueError, RuntimeError, MemoryError) as error:  # this image, not the run
        raise ItemError("segment", f"{type(error).__name__}: {error}") from None
    mask = class_lookup(["background", *result.labels], classes, unknown=IGNORE_INDEX)[result.mask].astype(np.uint8)
    try:
        if job.scores_path is not None:
            write_npz(job.scores_path, probabilities=result.probabilities.astype(np.float16),
                      labels=np.array(["background", *result.labels]))
        if job.overlay_path is not None:
            write_image(job.overlay_path, overlay_with_legend(image, mask, classes))
        write_mask(job.mask_path, mask)
    except OSError as error:
        raise ItemError("write", f"{type(error).__name__}: {error}") from None
    entry = {"status": "done", "labels": list(result.labels),
             "ignored_fraction": round(float((result.mask == IGNORE_INDEX).mean()), 4)}
    if result.label_scores is not None:
        entry["label_scores"] = [round(float(score), 4) for score in result.label_scores]
    return entry
