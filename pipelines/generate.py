"""``freelabel generate``: pseudo-masks for a folder of images from image-level labels."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from freelabel.clip.loading import ClipConfig, load_clip
from freelabel.errors import FreelabelError
from freelabel.io import (IGNORE_INDEX, ImageReadError, atomic_path, list_images, prefetch_images, provenance,
                          read_image_labels, read_json, write_classes, write_json, write_mask)
from freelabel.pseudo.labeler import Labeler, LabelerConfig

MANIFEST = "manifest.json"


@dataclass
class GenerateConfig:
    """Everything that decides the pseudo-masks; saved in the manifest beside them."""

    clip: ClipConfig = field(default_factory=ClipConfig)  # which CLIP computes the maps
    labeler: LabelerConfig = field(default_factory=LabelerConfig)  # maps, views, fusion, background, CRF
    save_scores: bool = False  # also write float16 probabilities per image to scores/<image>.npz
    overwrite: bool = False  # recompute images whose mask already exists


def _class_index(labels: dict[str, list[str]] | list[str]) -> list[str]:
    names = labels if isinstance(labels, list) else [n for v in labels.values() for n in v]
    return ["background", *dict.fromkeys(n for n in names if n != "background")]


def generate(images_dir: str | Path, labels_spec: str, out: str | Path,
             config: GenerateConfig | None = None) -> dict:
    """Write one palette PNG per image to ``out`` (same relative path, ``.png``), ``classes.txt`` (the global
    label index: 0 background, then labels in order of first appearance), optional ``scores/*.npz`` and
    ``manifest.json`` (config, model, versions, per-image status).

    Masks already present are kept unless ``overwrite``; every write is atomic, so a killed run resumes where it
    stopped. Unreadable images and images without labels are reported in the manifest and skipped.
    Returns the manifest.
    """
    config = config or GenerateConfig()
    images_dir, out = Path(images_dir), Path(out)
    image_labels = read_image_labels(labels_spec)
    classes = _class_index(image_labels)
    if len(classes) > IGNORE_INDEX:
        raise FreelabelError(f"{len(classes) - 1} distinct labels do not fit 8-bit masks (at most {IGNORE_INDEX - 1})")
    names = [str(p) for p in list_images(images_dir)]
    if not names:
        raise FreelabelError(f"no images found below {images_dir}")
    if isinstance(image_labels, dict):
        unknown = sorted(set(image_labels) - set(names))
        if unknown and len(unknown) == len(image_labels):
            raise FreelabelError(f"none of the images named in {labels_spec} is below {images_dir} "
                                 f"(e.g. {unknown[0]!r}); keys must be paths relative to the image folder")
    manifest_path = out / MANIFEST
    previous = read_json(manifest_path) if manifest_path.is_file() else {}
    if previous and previous.get("classes") != classes:
        raise FreelabelError(f"{out} holds masks made with another label index; use a new --out folder")
    status: dict[str, dict] = dict(previous.get("images", {}))
    clip = load_clip(config.clip)
    labeler = Labeler(clip, config=config.labeler)
    write_classes(out / "classes.txt", classes)
    manifest = {"config": asdict(config), "model": clip.pretrained, "images_dir": str(images_dir),
                "labels": labels_spec, "classes": classes, **provenance(), "images": status}
    done, skipped, failed = 0, 0, 0

    def labels_of(name: str) -> list[str]:
        return image_labels if isinstance(image_labels, list) else image_labels.get(name, [])

    todo = []
    for name in names:
        if (out / Path(name).with_suffix(".png")).is_file() and not config.overwrite:
            skipped += 1
        elif not labels_of(name):
            status[name] = {"status": "skipped", "reason": "no labels for this image"}
            skipped += 1
        else:
            todo.append(name)
    started = time.monotonic()
    # the labels still needed, in batches, once (a resumed run does not re-encode a finished vocabulary)
    labeler.prepare_labels(list(dict.fromkeys(label for name in todo for label in labels_of(name))))
    text_seconds = time.monotonic() - started
    started = time.monotonic()
    for name, image in tqdm(prefetch_images(images_dir, todo), total=len(todo), desc="pseudo-masks", unit="image"):
        if isinstance(image, ImageReadError):
            status[name] = {"status": "failed", "reason": str(image)}
            failed += 1
            continue
        target = out / Path(name).with_suffix(".png")
        labeler.set_image(image)
        result = labeler.segment(labels_of(name))
        lookup = np.zeros(256, dtype=np.uint8)  # the image's label order -> the global label index
        lookup[1:len(result.labels) + 1] = [classes.index(n) for n in result.labels]
        lookup[IGNORE_INDEX] = IGNORE_INDEX
        write_mask(target, lookup[result.mask])
        if config.save_scores:
            with atomic_path(out / "scores" / Path(name).with_suffix(".npz")) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez_compressed(handle, probabilities=result.probabilities.astype(np.float16),
                                        labels=np.array(["background", *result.labels]))
        status[name] = {"status": "done", "labels": list(result.labels),
                        "ignored_fraction": round(float((result.mask == IGNORE_INDEX).mean()), 4)}
        done += 1
        if done % 50 == 0:
            write_json(manifest_path, manifest)
    manifest["summary"] = {"done": done, "skipped": skipped, "failed": failed,
                           "seconds": round(time.monotonic() - started, 1), "text_seconds": round(text_seconds, 1)}
    write_json(manifest_path, manifest)
    return manifest
