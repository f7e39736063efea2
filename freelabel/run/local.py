"""The local loop: jobs one after another in this process, images read ahead in a background thread."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from tqdm import tqdm

from freelabel.io.images import MAX_PIXELS, ImageReadError, prefetch_images
from freelabel.run.job import ImageJob, ItemError, run_job
from freelabel.segmentation import ImageSegmenter


def run_local(model: ImageSegmenter, jobs: Sequence[ImageJob], classes: Sequence[str], desc: str = "masks",
              max_pixels: int | None = MAX_PIXELS) -> Iterator[tuple[ImageJob, dict[str, Any]]]:
    """Run ``jobs`` in order and yield each with its manifest entry as it finishes: ``run_job``'s entry, or
    ``{"status": "failed", "stage": read|segment|write, "reason": ...}`` for an item that failed (the loop goes on).
    A progress bar is shown on a terminal."""
    images = prefetch_images([job.image_path for job in jobs], max_pixels=max_pixels)
    for job, (_, image) in tqdm(zip(jobs, images), total=len(jobs), desc=desc, unit="image", disable=None):
        try:
            if isinstance(image, ImageReadError):
                raise ItemError("read", str(image))
            yield job, run_job(model, job, classes, image)
        except ItemError as error:
            yield job, {"status": "failed", "stage": error.stage, "reason": str(error)}
