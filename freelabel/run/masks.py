"""The folder job that writes one mask per image (``generate``, ``predict``): its inputs, and the loop that feeds
the images not yet done to an ``ImageSegmenter`` through an ``Engine``, journaling each as it finishes."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from freelabel.errors import FreelabelError
from freelabel.io.files import provenance
from freelabel.io.images import MAX_PIXELS
from freelabel.io.labels import LabelError, check_label, read_image_labels
from freelabel.io.masks import IGNORE_INDEX
from freelabel.run.engine import Engine, OncePerProcess
from freelabel.run.folder import JobFolder, failure, image_names
from freelabel.run.job import ImageJob, MaskWorker
from freelabel.run.local import LocalEngine
from freelabel.segmentation import ImageSegmenter

# seconds between manifest rebuilds while running, at least, and at least this many times a rebuild's own time: by
# time, not by count, since a rebuild writes every image's entry (a count would make a million-image run quadratic)
MANIFEST_SECONDS, MANIFEST_SHARE = 30.0, 10


@dataclass
class Inputs:
    """The images and their checked labels."""

    labels: dict[str, tuple[str, ...]]  # image -> its labels, for images that can be labelled
    problems: dict[str, dict[str, str]]  # image -> {"stage": "labels", "reason": ...}: labels that cannot be used
    unlabelled: list[str]  # images the label file names no labels for
    classes: list[str]  # the global class index: background, then labels in order of first appearance


def read_inputs(images_dir: Path, labels_spec: str) -> Inputs:
    """Read the label file ``labels_spec`` (see ``read_image_labels``) and list the images; file-level problems
    raise, per-image ones are collected."""
    return label_inputs(images_dir, read_image_labels(labels_spec), labels_spec)


def label_inputs(images_dir: Path, spec: Mapping[str, list[str]] | list[str], source: str) -> Inputs:
    """The images below ``images_dir`` with their labels from ``spec`` (image -> labels, or one list for every
    image), as read from ``source`` (named in errors). A bad shared label or a mapping that names none of the
    images raises; a bad label of one image fails that image only."""
    names = image_names(images_dir)
    if isinstance(spec, list):
        try:  # one label list for every image: a bad label is the input's mistake, not one image's
            shared = _checked_labels(spec)
        except LabelError as error:
            raise FreelabelError(f"{source}: {error}") from None
    elif not set(spec) & set(names):
        example = next(iter(spec), "")
        raise FreelabelError(f"none of the images named in {source} is below {images_dir} (e.g. {example!r}); "
                             "keys must be paths relative to the image folder")
    labels, problems, unlabelled = {}, {}, []
    for name in names:
        try:  # the shared list was checked once above
            checked = shared if isinstance(spec, list) else _checked_labels(spec.get(name, []))
        except LabelError as error:
            problems[name] = {"stage": "labels", "reason": f"{name}: {error}"}
            continue
        if checked:
            labels[name] = checked
        else:
            unlabelled.append(name)
    classes = ["background", *dict.fromkeys(label for image_labels in labels.values() for label in image_labels)]
    if len(classes) > IGNORE_INDEX:
        raise FreelabelError(f"{len(classes) - 1} distinct labels do not fit 8-bit masks (at most {IGNORE_INDEX - 1})")
    return Inputs(labels, problems, unlabelled, classes)


def _checked_labels(labels: list[str]) -> tuple[str, ...]:
    """``labels`` each through ``check_label`` (``LabelError`` for the first bad one), duplicates dropped, in order."""
    return tuple(dict.fromkeys(check_label(label) for label in labels))


@dataclass
class FolderOptions:
    """How a folder of masks is written (``generate`` and ``predict`` alike)."""

    save_scores: bool = False  # also write float16 probabilities per image to scores/<image>.npz
    overwrite: bool = False  # redo every image, and rebind the folder to new labels or settings
    max_pixels: int | None = MAX_PIXELS  # larger images are refused unread
    overlay: bool = False  # also write overlays/<image>.png: the mask over the image, with a legend


class MaskFolder:
    """An output folder of one palette PNG per image (same relative path, ``.png``), ``classes.txt``, optional
    ``scores/*.npz`` and ``overlays/*.png``, and the job files of ``JobFolder``. Construct it (the checks), then
    ``run`` a model on it."""

    def __init__(self, images_dir: Path, inputs: Inputs, out: Path, settings: Mapping[str, Any],
                 options: FolderOptions):
        """Bind ``out`` to the classes, every image's labels and ``settings`` (what shapes the masks); raises when
        it holds another job, unless ``options.overwrite``. Nothing is written yet."""
        self.images_dir, self.inputs, self.out, self.options = images_dir, inputs, out, options
        # every image's labels (None: none usable) are bound by their hash, so that changing one image's labels is
        # refused like changing the class index
        image_labels = {name: list(labels) for name, labels in inputs.labels.items()}
        image_labels.update({name: None for name in [*inputs.problems, *inputs.unlabelled]})
        labels_hash = hashlib.sha256(json.dumps(image_labels, sort_keys=True).encode()).hexdigest()
        self.folder = JobFolder(out, {"classes": inputs.classes, "image_labels": labels_hash, "settings": settings},
                                options.overwrite, {"image folder": images_dir})

    def run(self, make_model: Callable[[], ImageSegmenter], manifest: Mapping[str, Any],
            engine: Engine | None = None) -> dict:
        """Segment the images not yet done and rebuild ``manifest.json`` (``manifest`` plus the classes, versions,
        per-image status and a ``summary`` counting done, skipped and failed images) and ``errors.jsonl``.

        make_model: builds the model (picklable, for an engine that runs it elsewhere); it is built here once,
        before the folder is touched (a model that cannot load leaves no trace), and encodes the labels the images
        need. ``engine`` (default ``LocalEngine()``) runs the jobs (``MaskWorker``); a local one reuses that model.
        Returns the manifest."""
        make_model = OncePerProcess(make_model)
        model = make_model()
        with self.folder.open(self.inputs.classes):
            jobs, skipped = [], 0
            for name, labels in self.inputs.labels.items():
                scores = self.out / "scores" / Path(name).with_suffix(".npz") if self.options.save_scores else None
                overlay = self.out / "overlays" / Path(name).with_suffix(".png") if self.options.overlay else None
                job = ImageJob(name, self.images_dir / name, labels, self.out / Path(name).with_suffix(".png"), scores,
                               overlay)
                if self.folder.done(name, job.outputs()):
                    skipped += 1
                else:
                    jobs.append(job)
            manifest = {**manifest, "classes": self.inputs.classes, **provenance()}
            started = time.monotonic()
            # the labels still needed, in batches, once (a resumed run does not re-encode a finished vocabulary)
            labels = list(dict.fromkeys(label for job in jobs for label in job.labels))
            model.prepare_labels(labels)
            text_seconds = time.monotonic() - started
            started = time.monotonic()
            worker = MaskWorker(make_model, self.inputs.classes, labels, self.options.max_pixels)
            next_rebuild = time.monotonic() + MANIFEST_SECONDS
            for finished in (engine or LocalEngine()).run(worker, jobs, shared=(self.images_dir, self.out)):
                self.folder.record_all([(job.name, entry) for job, entry in finished])
                if time.monotonic() >= next_rebuild:
                    rebuilding = time.monotonic()
                    self._write_records(manifest)
                    took = time.monotonic() - rebuilding
                    next_rebuild = time.monotonic() + max(MANIFEST_SECONDS, MANIFEST_SHARE * took)
            self.folder.finish()
            counts = self.folder.counts
            manifest["summary"] = {"done": counts["done"], "skipped": skipped + len(self.inputs.unlabelled),
                                   "failed": counts["failed"] + len(self.inputs.problems),
                                   "seconds": round(time.monotonic() - started, 1),
                                   "text_seconds": round(text_seconds, 1)}
            self._write_records(manifest)
            return manifest

    def _write_records(self, manifest: Mapping[str, Any]) -> None:
        """Rebuild ``manifest.json`` and ``errors.jsonl`` from the journal and the per-image label checks."""
        inputs = self.inputs
        status = {name: entry for name, entry in self.folder.status().items() if name in inputs.labels}
        status.update({name: failure(**problem) for name, problem in inputs.problems.items()})
        status.update({name: {"status": "skipped", "reason": "no labels for this image"} for name in inputs.unlabelled})
        self.folder.write_records(manifest, status, lambda name: str(self.images_dir / name))
