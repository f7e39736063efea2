"""``freelabel generate``: pseudo-masks for a folder of images from image-level labels."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from freelabel.clip.loading import ClipConfig, load_clip
from freelabel.errors import FreelabelError
from freelabel.io.files import provenance, read_json, write_json
from freelabel.io.images import list_images
from freelabel.io.labels import read_image_labels, write_classes
from freelabel.io.masks import IGNORE_INDEX
from freelabel.pseudo.labeler import Labeler
from freelabel.pseudo.preset import resolve_preset
from freelabel.run.job import ImageJob
from freelabel.run.local import run_local

MANIFEST = "manifest.json"
MANIFEST_EVERY = 50  # images between manifest saves


@dataclass
class GenerateConfig:
    """Everything that decides the pseudo-masks; saved in the manifest beside them."""

    clip: ClipConfig = field(default_factory=ClipConfig)  # which CLIP computes the maps
    preset: str | None = None  # preset file; None = the model's own preset (freelabel.pseudo.preset)
    overrides: dict[str, Any] = field(default_factory=dict)  # labeler fields set on top of the preset
    save_scores: bool = False  # also write float16 probabilities per image to scores/<image>.npz
    overwrite: bool = False  # recompute images whose mask already exists


def _class_index(labels: dict[str, list[str]] | list[str]) -> list[str]:
    names = labels if isinstance(labels, list) else [n for v in labels.values() for n in v]
    return ["background", *dict.fromkeys(n for n in names if n != "background")]


def generate(images_dir: str | Path, labels_spec: str, out: str | Path,
             config: GenerateConfig | None = None) -> dict:
    """Write one palette PNG per image to ``out`` (same relative path, ``.png``), ``classes.txt`` (the global
    label index: 0 background, then labels in order of first appearance), optional ``scores/*.npz`` and
    ``manifest.json`` (config, preset, final labeler settings, model, versions, per-image status).

    Settings come from the model's preset (or ``config.preset``) with ``config.overrides`` on top; all are
    validated before the model loads. Masks already present are kept unless ``overwrite``; every write is
    atomic, so a killed run resumes where it stopped. Unreadable images and images without labels are reported
    in the manifest and skipped. Returns the manifest.
    """
    config = config or GenerateConfig()
    images_dir, out = Path(images_dir), Path(out)
    preset, labeler_config = resolve_preset(config.clip.model, config.preset, config.overrides)
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
    labeler = Labeler(clip, config=labeler_config)
    write_classes(out / "classes.txt", classes)
    manifest = {"config": asdict(config), "preset": preset.to_dict(), "labeler": labeler_config.to_dict(),
                "model": clip.pretrained, "images_dir": str(images_dir), "labels": labels_spec, "classes": classes,
                **provenance(), "images": status}
    done, skipped, failed = 0, 0, 0

    def labels_of(name: str) -> list[str]:
        return image_labels if isinstance(image_labels, list) else image_labels.get(name, [])

    jobs = []
    for name in names:
        mask_path = out / Path(name).with_suffix(".png")
        if mask_path.is_file() and not config.overwrite:
            skipped += 1
        elif not labels_of(name):
            status[name] = {"status": "skipped", "reason": "no labels for this image"}
            skipped += 1
        else:
            scores_path = out / "scores" / Path(name).with_suffix(".npz") if config.save_scores else None
            jobs.append(ImageJob(name, images_dir / name, tuple(labels_of(name)), mask_path, scores_path))
    started = time.monotonic()
    # the labels still needed, in batches, once (a resumed run does not re-encode a finished vocabulary)
    labeler.prepare_labels(list(dict.fromkeys(label for job in jobs for label in job.labels)))
    text_seconds = time.monotonic() - started
    started = time.monotonic()
    for job, entry in run_local(labeler, jobs, classes):
        status[job.name] = entry
        done += entry["status"] == "done"
        failed += entry["status"] == "failed"
        if done and done % MANIFEST_EVERY == 0:
            write_json(manifest_path, manifest)
    manifest["summary"] = {"done": done, "skipped": skipped, "failed": failed,
                           "seconds": round(time.monotonic() - started, 1), "text_seconds": round(text_seconds, 1)}
    write_json(manifest_path, manifest)
    return manifest
