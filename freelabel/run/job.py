"""The unit of work of a folder of masks (``generate``, ``predict``): an image job, and the worker that reads,
segments (a batch of images at once) and writes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from freelabel.errors import FreelabelError
from freelabel.io.files import write_npz
from freelabel.io.images import MAX_PIXELS, ImageReadError, read_image_or_error, write_image
from freelabel.io.labels import class_lookup
from freelabel.io.masks import IGNORE_INDEX, write_mask
from freelabel.io.overlay import overlay_with_legend
from freelabel.run.folder import failure
from freelabel.segmentation import ImageSegmenter, Segmentation


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


class MaskWorker:
    """The worker of a folder of masks (see ``BatchWorker``): reads a batch of image jobs' images, segments them
    with one model (``segment_batch`` for more than one), writes each one's outputs. Builds its model on first use,
    in the process that runs it."""

    def __init__(self, make_model: Callable[[], ImageSegmenter], classes: Sequence[str], labels: Sequence[str],
                 max_pixels: int | None = MAX_PIXELS):
        """make_model: builds the model (picklable; see ``OncePerProcess``). classes: the global class index the
        masks' values refer to (index 0 background). labels: every label the jobs ask for, encoded in batches once
        the model is built. max_pixels: larger images are refused unread."""
        self.make_model, self.classes, self.labels = make_model, list(classes), list(labels)
        self.max_pixels = max_pixels
        self._model: ImageSegmenter | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    def read(self, job: ImageJob) -> np.ndarray | ImageReadError:
        """The job's (H, W, 3) uint8 image, or why it cannot be read."""
        return read_image_or_error(job.image_path, self.max_pixels)

    def __call__(self, jobs: Sequence[ImageJob], images: Sequence[np.ndarray | ImageReadError]
                 ) -> list[dict[str, Any]]:
        """Segment and write ``jobs`` (their ``read`` images); returns each one's journal entry (see ``write_job``
        for a done one, ``failure(stage, reason)`` for one that failed to read, segment or write)."""
        if self._model is None:
            self._model = self.make_model()
            self._model.prepare_labels(self.labels)
        readable = [i for i, image in enumerate(images) if not isinstance(image, ImageReadError)]
        results = segment_images(self._model, [images[i] for i in readable], [jobs[i].labels for i in readable])
        entries = [failure("read", str(image)) for image in images]
        for i, result in zip(readable, results):
            try:
                entries[i] = write_job(jobs[i], self.classes, images[i], result) \
                    if isinstance(result, Segmentation) else failure(result.stage, str(result))
            except ItemError as error:
                entries[i] = failure(error.stage, str(error))
        return entries


SEGMENT_ERRORS = (FreelabelError, ValueError, RuntimeError, MemoryError)  # one image's problems, not the run's


def segment_images(model: ImageSegmenter, images: Sequence[np.ndarray], labels: Sequence[Sequence[str]]
                   ) -> list[Segmentation | ItemError]:
    """Each of ``images`` ((H, W, 3) uint8) segmented for its ``labels`` (empty: the model selects): one
    ``segment_batch`` call for several, ``set_image`` + ``segment`` for one. When a batch fails, its images are
    redone one by one, so only the image at fault gets its ``ItemError`` (stage "segment")."""
    if len(images) > 1:
        try:
            return list(model.segment_batch(images, labels))
        except SEGMENT_ERRORS:
            return [segment_images(model, [image], [image_labels])[0] for image, image_labels in zip(images, labels)]
    results: list[Segmentation | ItemError] = []
    for image, image_labels in zip(images, labels):
        try:
            model.set_image(image)
            results.append(model.segment(image_labels))
        except SEGMENT_ERRORS as error:
            results.append(ItemError("segment", f"{type(error).__name__}: {error}"))
    return results


def write_job(job: ImageJob, classes: Sequence[str], image: np.ndarray, result: Segmentation) -> dict[str, Any]:
    """Write one image's outputs atomically: the scores and the overlay first, then the mask (its values mapped to
    the global ``classes``, index 0 background; labels not among them become 255).

    image: the (H, W, 3) uint8 image (for the overlay). Returns the journal entry ``{"status": "done", "labels":
    [...], "ignored_fraction": float in [0, 1], "label_scores": [...] (a segmenter's)}``. Raises ``ItemError``
    (stage "write") when a file cannot be written.
    """
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
