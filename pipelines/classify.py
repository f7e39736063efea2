"""``freelabel classify``: image-level labels for a folder of images, selected from an open vocabulary.

Each image's classes are chosen by ``LabelSelector`` (the whole image and its regions, each classified alone, then
each chosen label checked against its own pseudo-mask) with the model preset's ``selection`` and ``labeler``
settings. The folder follows ``generate``'s rules: bound to the vocabulary and
settings (``job.json``), one journal line per image as it finishes, ``manifest.json`` and ``errors.jsonl``
rebuilt from it, a killed run resumes to the same bytes. ``labels.json`` (image -> selected names) is the input
format of ``freelabel generate --labels``, for a person to correct and re-run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from freelabel.clip.loading import ClipConfig, LoadedClip, load_clip
from freelabel.config import option
from freelabel.errors import ConfigError, FreelabelError
from freelabel.io import ImageReadError, prefetch_images, provenance, read_vocabulary, write_json
from freelabel.io.files import append_jsonl
from freelabel.io.images import MAX_PIXELS
from freelabel.pipelines.generate import JOURNAL, bind_folder, image_names, open_folder, write_records
from freelabel.pseudo.config import LabelerConfig, SelectionConfig
from freelabel.pseudo.labeler import Labeler
from freelabel.pseudo.preset import resolve_preset
from freelabel.pseudo.select import LabelSelector

SCORES_KEPT = 10  # best scores written per image (the vocabulary may hold thousands of classes)


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

    def settings(self) -> tuple[SelectionConfig, LabelerConfig]:
        """The preset's selection settings with ``overrides`` on top, and its labeler settings (for the masks the
        selected labels are checked against) with ``labeler_overrides`` on top; ``ConfigError`` for a bad one."""
        preset, labeler = resolve_preset(self.clip.model, self.preset, self.labeler_overrides)
        unknown = set(self.overrides) - set(SelectionConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown selection settings: {', '.join(sorted(unknown))}")
        return replace(preset.selection, **self.overrides), labeler


def image_entry(selector: LabelSelector, image: np.ndarray | ImageReadError) -> dict[str, Any]:
    """One image's journal entry: its selected labels, the best scores (and every selected label's), what the
    check against the masks dropped and added; or why it failed (that image only, the run goes on)."""
    if isinstance(image, ImageReadError):
        return {"status": "failed", "stage": "read", "reason": str(image)}
    try:
        selected = selector.select(image)
    except (FreelabelError, ValueError, RuntimeError, MemoryError) as error:
        return {"status": "failed", "stage": "select", "reason": f"{type(error).__name__}: {error}"}
    scores = selected.scores
    best = {selector.names[i]: round(float(scores[i]), 5) for i in scores.argsort()[::-1][:SCORES_KEPT]}
    best.update((label, round(score, 5)) for label, score in selected.labels)
    return {"status": "done", "labels": [label for label, _ in selected.labels], "scores": best,
            "dropped": selected.dropped, "added": selected.added}


def classify_folder(images_dir: str | Path, vocabulary_spec: str, out: str | Path,
                    config: ClassifyConfig | None = None, load: Callable[[], LoadedClip] | None = None) -> dict:
    """Select every image's labels below ``images_dir`` from the vocabulary ``vocabulary_spec`` (a file with one
    class per line, synonyms after commas; a ``classes.txt``; or ``"a,b,c"``) and write to ``out``: ``labels.json``,
    ``manifest.json`` (config, selection and labeler settings, per image its labels, the best scores, what the
    check against the masks dropped and added), ``errors.jsonl``, ``job.json``, ``journal.jsonl``. The vocabulary,
    settings and image list are checked before the model loads (``load``: how to load it; by default
    ``load_clip(config.clip)``). A problem with one image (reading it, selecting its labels) fails that image only.
    Returns the manifest with every image's entry under ``images``; its ``summary`` counts done, skipped and failed
    images."""
    config = config or ClassifyConfig()
    images_dir, out = Path(images_dir), Path(out)
    selection, labeler = config.settings()
    vocabulary = read_vocabulary(vocabulary_spec)
    names = image_names(images_dir)
    settings = {"model": config.clip.model, "pretrained": config.clip.pretrained, "selection": selection.to_dict(),
                "labeler": labeler.to_dict(), "vocabulary": hashlib.sha256(json.dumps(vocabulary).encode()).hexdigest(),
                "max_pixels": config.max_pixels}
    binding = {"classes": [], "image_labels": None, "settings": settings}
    rebind = bind_folder(out, binding, config.overwrite)
    clip = (load or (lambda: load_clip(config.clip)))()  # before the folder is made: a failed load leaves no trace
    finished = open_folder(out, binding, None, rebind)
    todo = [name for name in names if finished.get(name, {}).get("status") != "done"]
    selector = LabelSelector(Labeler(clip, config=labeler), selection)
    started = time.monotonic()
    selector.set_vocabulary(vocabulary)
    text_seconds, started = time.monotonic() - started, time.monotonic()
    counts = Counter()
    images = prefetch_images([images_dir / name for name in todo], max_pixels=config.max_pixels)
    for name, (_, image) in tqdm(zip(todo, images), total=len(todo), desc="selecting labels", unit="image",
                                 disable=None):
        entry = image_entry(selector, image)
        append_jsonl(out / JOURNAL, {"image": name, **entry})
        finished[name] = {"image": name, **entry}
        counts[entry["status"]] += 1
    status = {name: {k: v for k, v in finished[name].items() if k != "image"} for name in names if name in finished}
    manifest = {"config": asdict(config), "selection": selection.to_dict(), "labeler": labeler.to_dict(),
                "images_dir": str(images_dir), "vocabulary": vocabulary_spec, "classes": len(vocabulary),
                "model": clip.pretrained, **provenance(),
                "summary": {"done": counts["done"], "skipped": len(names) - len(todo), "failed": counts["failed"],
                            "seconds": round(time.monotonic() - started, 1), "text_seconds": round(text_seconds, 1)}}
    write_json(out / "labels.json", {name: entry["labels"] for name, entry in status.items()
                                     if entry["status"] == "done"})
    write_records(out, manifest, status, lambda name: str(images_dir / name))
    return {**manifest, "images": status}
