"""The per-image unit of work of ``freelabel generate``: read, segment, map to the global class index, write."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from freelabel.io.files import atomic_path
from freelabel.io.images import read_image
from freelabel.io.labels import class_lookup
from freelabel.io.masks import IGNORE_INDEX, write_mask
from freelabel.pseudo.labeler import Labeler


@dataclass(frozen=True)
class ImageJob:
    """One image to label; plain data, so a job can be sent to another process."""

    name: str  # path relative to the image folder, as in the manifest
    image_path: Path  # where to read it
    labels: tuple[str, ...]  # its image-level labels, in the order the labeler sees them
    mask_path: Path  # where its mask goes (palette PNG, values index the global classes)
    scores_path: Path | None  # where its float16 probabilities go (.npz), or None


def run_job(labeler: Labeler, job: ImageJob, classes: Sequence[str], image: np.ndarray | None = None
            ) -> dict[str, Any]:
    """Label one image and write its outputs atomically: the mask first, then the scores.

    classes: the global class names (index 0 background); the mask's values index them. image: the (H, W, 3)
    uint8 image if already read (by a prefetching loop), else it is read from ``job.image_path``. Returns the
    manifest entry ``{"status": "done", "labels": [...], "ignored_fraction": float in [0, 1]}``.
    Raises ``ImageReadError`` for an unreadable image.
    """
    image = read_image(job.image_path) if image is None else image
    labeler.set_image(image)
    result = labeler.segment(job.labels)
    to_global = class_lookup(["background", *result.labels], classes, unknown=IGNORE_INDEX)
    write_mask(job.mask_path, to_global[result.mask].astype(np.uint8))
    if job.scores_path is not None:
        with atomic_path(job.scores_path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, probabilities=result.probabilities.astype(np.float16),
                                labels=np.array(["background", *result.labels]))
    return {"status": "done", "labels": list(result.labels),
            "ignored_fraction": round(float((result.mask == IGNORE_INDEX).mean()), 4)}
