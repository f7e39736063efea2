"""What runs a folder's image jobs: the one interface an engine implements (``LocalEngine`` in ``local``)."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence

from freelabel.run.job import ImageJob
from freelabel.segmentation import ImageSegmenter


class Engine(Protocol):
    """Feeds image jobs to a model and reports each as it finishes. ``LocalEngine`` runs them one after another in
    this process; an engine that spreads them over workers builds one model per worker with ``make_model``."""

    def run(self, make_model: Callable[[], ImageSegmenter], jobs: Sequence[ImageJob], classes: Sequence[str],
            max_pixels: int | None) -> Iterator[tuple[ImageJob, dict[str, Any]]]:
        """Read, segment and write every job (``run_job``) with the model ``make_model()`` returns, and yield each
        job with its journal entry as it finishes (in any order): ``run_job``'s entry, or ``failure(stage,
        reason)`` for a job that failed (read, segment or write; the run goes on). classes: the global class
        index the masks' values refer to. max_pixels: larger images are refused unread."""
