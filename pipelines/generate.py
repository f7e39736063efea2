"""``freelabel generate``: pseudo-masks for a folder of images from image-level labels.

One output folder is one job. Before the first mask, the folder is bound to its label index and the settings that
shape masks (``job.json``, beside ``classes.txt``); a rerun with other labels or settings is refused unless
``overwrite``. Each finished image is appended to ``journal.jsonl`` as it finishes (an entry is never lost to a
kill); ``manifest.json`` and ``errors.jsonl`` are rebuilt from it. An image counts as done when its journal entry
says so and all of its outputs exist, so a killed run resumes to the outputs an uninterrupted run writes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from freelabel.clip.loading import ClipConfig, LoadedClip, load_clip
from freelabel.config import option
from freelabel.errors import ConfigError, FreelabelError
from freelabel.io.files import append_jsonl, provenance, read_json, read_jsonl, write_json, write_jsonl
from freelabel.io.images import MAX_PIXELS, list_images
from freelabel.io.labels import LabelError, check_label, read_image_labels, write_classes
from freelabel.io.masks import IGNORE_INDEX
from freelabel.pseudo.labeler import Labeler
from freelabel.pseudo.preset import resolve_preset
from freelabel.run.job import ImageJob
from freelabel.segmentation import ImageSegmenter
from freelabel.run.local import run_local

JOB, JOURNAL, MANIFEST, ERRORS = "job.json", "journal.jsonl", "manifest.json", "errors.jsonl"
MANIFEST_EVERY = 50  # images between manifest rebuilds while running


@dataclass
class GenerateConfig:
    """Everything that decides the pseudo-masks; saved in the manifest beside them."""

    clip: ClipConfig = option(default_factory=ClipConfig, help="Which CLIP computes the maps.")
    preset: str | None = option(None, help="Preset JSON (e.g. from `freelabel tune`), or 'default' for the library "
                                "default preset; None = the model's own preset (freelabel.pseudo.preset).")
    overrides: dict[str, Any] = option(default_factory=dict, help="Labeler fields set on top of the preset.")
    save_scores: bool = option(False, help="Also write float16 probabilities per image to scores/<image>.npz.")
    overwrite: bool = option(False, help="Redo every image, and rebind the folder to new labels or settings; needed "
                             "to reuse a folder with other labels or settings.")
    max_pixels: int | None = option(MAX_PIXELS, help="Larger images are refused unread (decompression bombs); None "
                                    "= no limit.")
    vocabulary: str | None = option(None, flag="--vocab", help="Label-free: each image's labels are selected from "
                                    "this vocabulary (a file with one class per line, synonyms after commas, a "
                                    "classes.txt, or 'a,b,c'; see `freelabel classify`) into OUT/selection/ first; "
                                    "None = labels are given.")
    selection_overrides: dict[str, Any] = option(default_factory=dict, help="SelectionConfig fields over the "
                                                 "preset's.")

    def __post_init__(self) -> None:
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ConfigError(f"max_pixels must be at least 1, got {self.max_pixels}")


@dataclass
class Inputs:
    """The images and their checked labels."""

    labels: dict[str, tuple[str, ...]]  # image -> its labels, for images that can be labelled
    problems: dict[str, dict[str, str]]  # image -> {"stage": "labels", "reason": ...}: labels that cannot be used
    unlabelled: list[str]  # images the label file names no labels for
    classes: list[str]  # the global class index: background, then labels in order of first appearance


def image_names(images_dir: Path) -> list[str]:
    """The images below ``images_dir`` (paths relative to it); raises when there are none, or when two would
    write the same mask (names that differ only in the extension)."""
    names = [str(p) for p in list_images(images_dir)]
    if not names:
        raise FreelabelError(f"no images found below {images_dir}")
    targets = Counter(str(Path(name).with_suffix("")) for name in names)
    clashes = sorted(name for name in names if targets[str(Path(name).with_suffix(""))] > 1)
    if clashes:
        raise FreelabelError(f"{len(clashes)} images would write the same mask ({', '.join(clashes[:4])}"
                             f"{', ...' if len(clashes) > 4 else ''}): rename them so that names differ in more "
                             "than the extension")
    return names


def read_inputs(images_dir: Path, labels_spec: str) -> Inputs:
    """Read the label file and list the images; file-level problems raise, per-image ones are collected."""
    spec = read_image_labels(labels_spec)
    names = image_names(images_dir)
    if isinstance(spec, list):
        try:  # one label list for every image: a bad label is the input's mistake, not one image's
            shared = _checked_labels(spec)
        except LabelError as error:
            raise FreelabelError(f"{labels_spec}: {error}") from None
    elif not set(spec) & set(names):
        example = next(iter(spec), "")
        raise FreelabelError(f"none of the images named in {labels_spec} is below {images_dir} (e.g. {example!r}); "
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


def bind_folder(out: Path, binding: dict[str, Any], overwrite: bool) -> bool:
    """Check ``out`` against the job it is bound to. Returns whether the binding must be (re)written; raises when
    the folder belongs to another job and ``overwrite`` is off."""
    if not (out / JOB).is_file():
        return True
    previous = read_json(out / JOB)
    if previous == binding:
        return overwrite
    if overwrite:
        return True
    what = [key.replace("_", " ") for key in ("classes", "image_labels", "settings")
            if previous.get(key) != binding[key]]
    raise FreelabelError(f"{out} holds masks of another job (its {' and '.join(what) or 'binding'} differ; see "
                         f"{out / JOB}). Use a new --out folder, or --overwrite to redo every image with the new ones.")


def open_folder(out: Path, binding: dict[str, Any], classes: list[str] | None, rebind: bool) -> dict[str, dict]:
    """Make a bound output folder ready to write (after ``bind_folder``): remove the temporary files of killed
    writes, drop another job's journal and write the binding when ``rebind``, write ``classes.txt`` (unless
    ``classes`` is None: a folder without masks). Returns the journal's entries by image name."""
    out.mkdir(parents=True, exist_ok=True)
    clean_stray_files(out)
    if rebind:
        (out / JOURNAL).unlink(missing_ok=True)  # entries of another job, or of images to redo
        write_json(out / JOB, binding)
    if classes is not None:  # every run: a kill between the two writes cannot leave it stale
        write_classes(out / "classes.txt", classes)
    return {entry["image"]: entry for entry in read_jsonl(out / JOURNAL)}


def clean_stray_files(out: Path) -> None:
    """Remove the temporary files of writes a kill interrupted (see ``atomic_path``)."""
    for path in [p for p in out.rglob(".*.tmp*") if p.is_file()]:
        path.unlink()


def generate(images_dir: str | Path, labels_spec: str | None, out: str | Path, config: GenerateConfig | None = None
             ) -> dict:
    """Write one palette PNG per image to ``out`` (same relative path, ``.png``), ``classes.txt`` (the global
    label index: 0 background, then labels in order of first appearance), optional ``scores/*.npz``,
    ``job.json`` (what the folder is bound to), ``journal.jsonl``, ``manifest.json`` (config, preset, final labeler
    settings, model, versions, per-image status) and ``errors.jsonl`` (one object per failed image: path, stage,
    message).

    labels_spec: the images' labels (see ``read_image_labels``); None when ``config.vocabulary`` is given: then
    every image's labels are first selected from it (``classify_folder`` into ``out/selection/``, whose
    ``labels.json`` a person can correct and pass as labels) and the manifest lists them with their scores.
    Settings come from the model's preset (or ``config.preset``) with ``config.overrides`` on top. Everything that
    can be checked before the model loads is (settings, label file, image names); a problem with one image (its
    labels, its file) fails that image only. Returns the manifest, whose ``summary`` counts done, skipped and
    failed images.
    """
    config = config or GenerateConfig()
    images_dir, out = Path(images_dir), Path(out)
    if (labels_spec is None) == (config.vocabulary is None):
        raise FreelabelError("give either labels or a vocabulary to select them from, not both")
    preset, labeler_config = resolve_preset(config.clip.model, config.preset, config.overrides)
    check_out_dir(images_dir, out)
    clip: list[LoadedClip] = []

    def loaded_clip() -> LoadedClip:
        """The CLIP, loaded on first use (after every check), then shared by the selection and the labeler."""
        if not clip:
            clip.append(load_clip(config.clip))
        return clip[0]

    manifest = {"config": asdict(config), "preset": preset.to_dict(), "labeler": labeler_config.to_dict(),
                "images_dir": str(images_dir), "labels": labels_spec}
    selected: dict[str, dict] = {}
    if config.vocabulary is not None:
        from freelabel.pipelines.classify import ClassifyConfig, classify_folder  # it builds on this module

        selection = ClassifyConfig(clip=config.clip, preset=config.preset, overrides=config.selection_overrides,
                                   labeler_overrides=config.overrides, overwrite=config.overwrite,
                                   max_pixels=config.max_pixels)
        selected = classify_folder(images_dir, config.vocabulary, out / "selection", selection, loaded_clip)["images"]
        labels_spec = str(out / "selection" / "labels.json")
        manifest.update(labels=labels_spec, selected={
            name: {label: entry["scores"][label] for label in entry["labels"]}
            for name, entry in selected.items() if entry["status"] == "done"})
    inputs = read_inputs(images_dir, labels_spec)
    for name, entry in selected.items():  # an image selection failed on fails here too, not "unlabelled"
        if entry["status"] == "failed" and name in inputs.unlabelled:
            inputs.unlabelled.remove(name)
            inputs.problems[name] = {"stage": entry["stage"], "reason": entry["reason"]}
    settings = {"model": config.clip.model, "pretrained": config.clip.pretrained, "labeler": labeler_config.to_dict(),
                "save_scores": config.save_scores, "max_pixels": config.max_pixels}
    return label_folder(images_dir, inputs, out, settings, lambda: Labeler(loaded_clip(), config=labeler_config),
                        manifest, FolderOptions(config.save_scores, config.overwrite, config.max_pixels),
                        lambda: {"model": clip[0].pretrained})


def check_out_dir(images_dir: Path, out: Path) -> None:
    """Refuse an output folder that is, or is inside, the image folder."""
    if out.resolve() == images_dir.resolve() or images_dir.resolve() in out.resolve().parents:
        raise FreelabelError(f"--out {out} is inside the image folder {images_dir}: masks would overwrite images of "
                             "the same name and be read as images by the next run; choose a folder outside it")


@dataclass
class FolderOptions:
    """How a folder of masks is written (``generate`` and ``predict`` alike)."""

    save_scores: bool = False  # also write float16 probabilities per image to scores/<image>.npz
    overwrite: bool = False  # redo every image, and rebind the folder to new labels or settings
    max_pixels: int | None = MAX_PIXELS  # larger images are refused unread


def label_folder(images_dir: Path, inputs: Inputs, out: Path, settings: dict[str, Any],
                 make_segmenter: Callable[[], ImageSegmenter], manifest: dict[str, Any], options: FolderOptions,
                 loaded: Callable[[], dict[str, Any]] = dict) -> dict:
    """The job loop shared by ``generate`` and ``predict``: bind ``out`` to the classes, every image's labels and
    ``settings`` (refused when it holds another job, unless ``options.overwrite``), build the segmenter (after every
    check), segment the images not yet done, and rebuild ``manifest.json`` (``manifest`` plus what ``loaded()``
    returns once the model is built, the classes, versions and per-image status) and ``errors.jsonl``."""
    # every image's labels (None: none usable) are bound by their hash, so that changing one image's labels is
    # refused like changing the class index
    image_labels = {name: list(labels) for name, labels in inputs.labels.items()}
    image_labels.update({name: None for name in [*inputs.problems, *inputs.unlabelled]})
    labels_hash = hashlib.sha256(json.dumps(image_labels, sort_keys=True).encode()).hexdigest()
    binding = json.loads(json.dumps({"classes": inputs.classes, "image_labels": labels_hash,
                                     "settings": settings}))  # as it reads back from job.json
    rebind = bind_folder(out, binding, options.overwrite)
    segmenter = make_segmenter()
    finished = open_folder(out, binding, inputs.classes, rebind)

    jobs, skipped = [], 0
    for name, labels in inputs.labels.items():
        job = ImageJob(name, images_dir / name, labels, out / Path(name).with_suffix(".png"),
                       out / "scores" / Path(name).with_suffix(".npz") if options.save_scores else None)
        if finished.get(name, {}).get("status") == "done" and all(p.is_file() for p in job.outputs()):
            skipped += 1
        else:
            jobs.append(job)
    manifest = {**manifest, **loaded(), "classes": inputs.classes, **provenance()}
    started = time.monotonic()
    # the labels still needed, in batches, once (a resumed run does not re-encode a finished vocabulary)
    segmenter.prepare_labels(list(dict.fromkeys(label for job in jobs for label in job.labels)))
    text_seconds = time.monotonic() - started
    started = time.monotonic()
    counts = Counter()
    for job, entry in run_local(segmenter, jobs, inputs.classes, max_pixels=options.max_pixels):
        append_jsonl(out / JOURNAL, {"image": job.name, **entry})
        finished[job.name] = {"image": job.name, **entry}
        counts[entry["status"]] += 1
        if counts["done"] and counts["done"] % MANIFEST_EVERY == 0 and entry["status"] == "done":
            _write_records(out, images_dir, manifest, finished, inputs)
    manifest["summary"] = {"done": counts["done"], "skipped": skipped + len(inputs.unlabelled),
                           "failed": counts["failed"] + len(inputs.problems),
                           "seconds": round(time.monotonic() - started, 1), "text_seconds": round(text_seconds, 1)}
    _write_records(out, images_dir, manifest, finished, inputs)
    return manifest


def _write_records(out: Path, images_dir: Path, manifest: dict, finished: dict[str, dict], inputs: Inputs) -> None:
    """Rebuild ``manifest.json`` and ``errors.jsonl`` from the journal's entries and the per-image label checks."""
    status = {name: {k: v for k, v in entry.items() if k != "image"} for name, entry in finished.items()
              if name in inputs.labels}
    status.update({name: {"status": "failed", **problem} for name, problem in inputs.problems.items()})
    status.update({name: {"status": "skipped", "reason": "no labels for this image"} for name in inputs.unlabelled})
    write_records(out, manifest, status, lambda name: str(images_dir / name))


def write_records(out: Path, manifest: dict, status: dict[str, dict], path_of: Callable[[str], str]) -> None:
    """Write ``manifest.json`` (``manifest`` plus every item's ``status`` entry, sorted by name) and
    ``errors.jsonl`` (one line per failed item: ``path_of(name)``, stage, message)."""
    write_json(out / MANIFEST, {**manifest, "images": dict(sorted(status.items()))})
    write_jsonl(out / ERRORS, ({"path": path_of(name), "stage": entry["stage"], "message": entry["reason"]}
                               for name, entry in sorted(status.items()) if entry["status"] == "failed"))
