"""The local engine: jobs one after another in this process, images read ahead in a background thread."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm

from freelabel.io.images import MAX_PIXELS, ImageReadError, prefetch_images
from freelabel.run.folder import failure
from freelabel.run.job import ImageJob, ItemError, run_job
from freelabel.segmentation import ImageSegmenter


class LocalEngine:
    """Runs jobs in order in this process (see ``Engine``), with a progress bar on a terminal."""

    def run(self, make_model: Callable[[], ImageSegmenter], jobs: Sequence[ImageJob], classes: Sequence[str],
            max_pixels: int | None = MAX_PIXELS) -> Iterator[tuple[ImageJob, dict[str, Any]]]:
        """Run ``jobs`` in order on ``make_model()`` and yield each with its journal entry as it finishes (see
        ``Engine.run``)."""
        model = make_model()
        images = prefetch_images([job.image_path for job in jobs], max_pixels=max_pixels)
        for job, (_, image) in tqdm(zip(jobs, images), total=len(jobs), desc="masks", unit="image", disable=None):
            if isinstance(image, ImageReadError):
                yield job, failure("read", str(image))
                continue
            try:
                entry = run_job(model, job, classes, image)
            except ItemError as error:
                entry = failure(error.stage, str(error))
            yield job, entry
