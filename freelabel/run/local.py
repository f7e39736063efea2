"""The local loop: jobs one after another in this process, images read ahead in a background thread."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from tqdm import tqdm

from freelabel.io.images import ImageReadError, prefetch_images
from freelabel.pseudo.labeler import Labeler
from freelabel.run.job import ImageJob, run_job


def run_local(labeler: Labeler, jobs: Sequence[ImageJob], classes: Sequence[str], desc: str = "pseudo-masks"
              ) -> Iterator[tuple[ImageJob, dict[str, Any]]]:
    """Run ``jobs`` in order and yield each with its manifest entry as it finishes: ``run_job``'s entry, or
    ``{"status": "failed", "reason": ...}`` for an unreadable image. A progress bar is shown on a terminal."""
    images = prefetch_images([job.image_path for job in jobs])
    for job, (_, image) in tqdm(zip(jobs, images), total=len(jobs), desc=desc, unit="image", disable=None):
        if isinstance(image, ImageReadError):
            yield job, {"status": "failed", "reason": str(image)}
        else:
            yield job, run_job(labeler, job, classes, image)
