"""The label-free folder job: image-level labels for a folder of images, selected from an open vocabulary.

Each image's classes are chosen by ``LabelSelector`` (the whole image and its regions, each classified alone, then
each chosen label checked against its own pseudo-mask) with the model preset's ``selection`` and ``labeler``
settings. The folder follows ``JobFolder``'s rules: bound to the vocabulary and settings (``job.json``), one journal
line per image as it finishes, ``manifest.json`` and ``errors.jsonl`` rebuilt from it, a killed run resumes to the
same bytes. ``labels.json`` (image -> selected names) is the input format of ``freelabel generate --labels``, for a
person to correct and re-run; ``freelabel generate --vocab`` takes the selected labels in memory.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from freelabel.cards import Preset, resolve_preset
from freelabel.clip.config import ClipConfig
from freelabel.config import option
from freelabel.errors import ConfigError, FreelabelError
from freelabel.io import ImageReadError, provenance, read_vocabulary, write_json
from freelabel.io.images import MAX_PIXELS, read_image_or_error
from freelabel.pseudo.config import LabelerConfig, SelectionConfig
from freelabel.pseudo.labeler import Labeler
from freelabel.pseudo.select import LabelSelector
from freelabel.run.engine import Engine, OncePerProcess
from freelabel.run.engines import EngineConfig, engine_option
from freelabel.run.folder import JobFolder, failure, image_names
from freelabel.run.local import LocalEngine
from freelabel.run.masks import Inputs, label_inputs

SCORES_KEPT = 10  # best scores written per image (the vocabulary may hold thousands of classes)
LABELS = "labels.json"  # image -> selected labels, the input format of `generate --labels`


@dataclass
class ClassifyConfig:
    """Everything that decides the selected labels; saved in the manifest beside them."""

    clip: ClipConfig = option(default_factory=ClipConfig, help="Which CLIP scores the labels.")
    preset: str | None = option(None, help="Preset JSON, or 'default'; None = the model's own (its selection "
                                "settings).")
    overrides: dict[str, Any] = option(default_factory=dict, help="SelectionConfig fields set on top of the "
                                       "preset's.")
    labeler_overrides: dict[str, Any] = option(default_factory=dict, help="LabelerConfig fields over the preset's, "
                                               "for the pseudo-masks the selected labels are checked against.")
    overwrite: bool = option(False, help="Redo every image, and rebind the folder to a new vocabulary or settings; "
                             "needed to reuse a folder.")
    max_pixels: int | None = option(MAX_PIXELS, help="Larger images are refused unread (decompression bombs).")
    engine: EngineConfig = engine_option()

    def settings(self) -> tuple[SelectionConfig, LabelerConfig]:
        """The preset's selection settings with ``overrides`` on top, and its labeler settings (for the masks the
        selected labels are checked against) with ``labeler_overrides`` on top; ``ConfigError`` for a bad one."""
        preset, labeler = resolve_preset(self.clip.model, self.preset, self.labeler_overrides)
        return selection_settings(preset, self.overrides), labeler


def selection_settings(preset: Preset, overrides: Mapping[str, Any]) -> SelectionConfig:
    """``preset``'s selection settings with ``overrides`` (``SelectionConfig`` fields) on top; ``ConfigError`` for
    an unknown field or a bad value."""
    unknown = set(overrides) - set(SelectionConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown selection settings: {', '.join(sorted(unknown))}")
    return replace(preset.selection, **overrides)


def image_entry(selector: LabelSelector, image: np.ndarray | ImageReadError) -> dict[str, Any]:
    """One image's journal entry: its selected labels, the best scores (and every selected label's), what the
    check against the masks dropped and added; or why it failed (that image only, the run goes on)."""
    if isinstance(image, ImageReadError):
        return failure("read", str(image))
    try:
        selected = selector.select(image)
    except (FreelabelError, ValueError, RuntimeError, MemoryError) as error:
        return failure("select", f"{type(error).__name__}: {error}")
    scores = selected.scores
    best = {selector.names[i]: round(float(scores[i]), 5) for i in scores.argsort()[::-1][:SCORES_KEPT]}
    best.update((label, round(score, 5)) for label, score in selected.labels)
    return {"status": "done", "labels": [label for label, _ in selected.labels], "scores": best,
            "dropped": selected.dropped, "added": selected.added}


def selected_labels(status: Mapping[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Image -> its selected labels, for the images whose selection is done (the content of ``labels.json``)."""
    return {name: entry["labels"] for name, entry in status.items() if entry["status"] == "done"}


class SelectionWorker:
    """The worker of a selection folder (see ``BatchWorker``): reads images by name and selects each one's labels
    (``image_entry``). Builds its ``LabelSelector`` on first use, in the process that runs it."""

    def __init__(self, make_labeler: Callable[[], Labeler], selection: SelectionConfig, vocabulary: list[list[str]],
                 images_dir: Path, max_pixels: int | None = MAX_PIXELS):
        """make_labeler: builds the ``Labeler`` (picklable; see ``OncePerProcess``). selection: the settings.
        vocabulary: the classes, each a list of synonyms. images_dir: where the named images are. max_pixels: larger
        images are refused unread."""
        self.make_labeler, self.selection, self.vocabulary = make_labeler, selection, vocabulary
        self.images_dir, self.max_pixels = images_dir, max_pixels
        self._selector: LabelSelector | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_selector": None}

    def selector(self) -> LabelSelector:
        """The selector, built (and the vocabulary encoded) on first use."""
        if self._selector is None:
            self._selector = LabelSelector(self.make_labeler(), self.selection)
            self._selector.set_vocabulary(self.vocabulary)
        return self._selector

    def read(self, name: str) -> np.ndarray | ImageReadError:
        """The (H, W, 3) uint8 image ``name`` (relative to the image folder), or why it cannot be read."""
        return read_image_or_error(self.images_dir / name, self.max_pixels)

    def __call__(self, names: Sequence[str], images: Sequence[np.ndarray | ImageReadError]) -> list[dict[str, Any]]:
        """Each image's journal entry (``image_entry``)."""
        return [image_entry(self.selector(), image) for image in images]


def select_folder(images_dir: Path, vocabulary_spec: str, out: Path, config: ClassifyConfig,
                  selection: SelectionConfig, labeler_config: LabelerConfig,
                  make_labeler: Callable[[], Labeler], engine: Engine | None = None) -> dict:
    """Select every image's labels below ``images_dir`` from the vocabulary ``vocabulary_spec`` (a file with one
    class per line, synonyms after commas; a ``classes.txt``; or ``"a,b,c"``) and write to ``out``: ``labels.json``,
    ``manifest.json`` (config, selection and labeler settings, per image its labels, the best scores, what the
    check against the masks dropped and added), ``errors.jsonl``, ``job.json``, ``journal.jsonl``.

    selection, labeler_config: the settings in force (``config.settings()``). make_labeler: builds the ``Labeler``
    (with ``labeler_config``) whose CLIP classifies the views and whose masks check the labels; picklable (an
    engine may build it in other processes), called here after the vocabulary, settings and image list are checked
    and before the folder is touched. engine: runs the images (``SelectionWorker``; default ``LocalEngine()``, which
    reuses that labeler). A problem with one image (reading it, selecting its labels) fails that image only.
    Returns the manifest with every image's entry under ``images``; its ``summary`` counts done, skipped and failed
    images."""
    vocabulary = read_vocabulary(vocabulary_spec)
    names = image_names(images_dir)
    settings = {"model": config.clip.model, "pretrained": config.clip.pretrained, "selection": selection.to_dict(),
                "labeler": labeler_config.to_dict(),
                "vocabulary": hashlib.sha256(json.dumps(vocabulary).encode()).hexdigest(),
                "max_pixels": config.max_pixels}
    folder = JobFolder(out, {"classes": [], "image_labels": None, "settings": settings}, config.overwrite,
                       {"image folder": images_dir})
    make_labeler = OncePerProcess(make_labeler)
    labeler = make_labeler()  # before the folder is made: a failed load leaves no trace
    with folder.open(None):
        todo = [name for name in names if not folder.done(name, ())]
        worker = SelectionWorker(make_labeler, selection, vocabulary, images_dir, config.max_pixels)
        started = time.monotonic()
        worker.selector()  # the vocabulary encoded here, timed apart
        text_seconds, started = time.monotonic() - started, time.monotonic()
        for finished in (engine or LocalEngine()).run(worker, todo, shared=(images_dir, out)):
            folder.record_all(finished)
        folder.finish()
        journaled = folder.status()
        status = {name: journaled[name] for name in names if name in journaled}
        counts = folder.counts
        manifest = {"config": asdict(config), "selection": selection.to_dict(), "labeler": labeler_config.to_dict(),
                    "images_dir": str(images_dir), "vocabulary": vocabulary_spec, "classes": len(vocabulary),
                    "model": labeler.clip.pretrained, **provenance(),
                    "summary": {"done": counts["done"], "skipped": len(names) - len(todo), "failed": counts["failed"],
                                "seconds": round(time.monotonic() - started, 1),
                                "text_seconds": round(text_seconds, 1)}}
        with folder.stops_on_write_errors():
            write_json(out / LABELS, selected_labels(status))
        folder.write_records(manifest, status, lambda name: str(images_dir / name))
    return {**manifest, "images": status}


def selection_inputs(images_dir: Path, status: Mapping[str, dict[str, Any]], labels_path: str) -> Inputs:
    """The inputs of mask generation from a selection's per-image ``status`` (``select_folder``'s ``images``), as
    ``read_inputs`` reads them from its ``labels.json`` at ``labels_path`` (named in errors); an image whose
    selection failed fails with the same stage and reason, rather than counting as unlabelled."""
    labels = selected_labels(status)
    if not labels:  # what reading the empty labels.json says
        raise FreelabelError(f"{labels_path} lists no images")
    inputs = label_inputs(images_dir, labels, labels_path)
    for name, entry in status.items():
        if entry["status"] == "failed" and name in inputs.unlabelled:
            inputs.unlabelled.remove(name)
            inputs.problems[name] = {"stage": entry["stage"], "reason": entry["reason"]}
    return inputs
