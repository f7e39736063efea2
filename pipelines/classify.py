"""Predicting image-level labels for a folder of images over an open vocabulary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from freelabel.clip.classify import label_probabilities, label_similarities
from freelabel.clip.loading import ClipConfig, load_clip
from freelabel.errors import ConfigError, FreelabelError
from freelabel.io import (ImageReadError, LabelError, check_label, list_images, prefetch_images, provenance,
                          write_json)
from freelabel.io.files import write_jsonl

ERRORS = "errors.jsonl"


@dataclass
class ClassifyConfig:
    """How images are given labels. Saved as ``config.json`` beside the predictions."""

    clip: ClipConfig = field(default_factory=ClipConfig)  # which CLIP scores the labels
    top_k: int = 3  # labels kept per image (the most probable first)
    min_probability: float = 0.0  # a kept label needs at least this probability (softmax over the vocabulary)
    batch_size: int = 32  # images per encoder pass

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.batch_size < 1:
            raise ConfigError(f"top_k and batch_size must be at least 1, got {self.top_k} and {self.batch_size}")
        if not 0 <= self.min_probability <= 1:
            raise ConfigError(f"min_probability must be in [0, 1], got {self.min_probability}")


def classify_folder(images_dir: str | Path, vocabulary: list[str], out: str | Path,
                    config: ClassifyConfig | None = None) -> tuple[dict[str, list[str]], int]:
    """Score every image below ``images_dir`` against ``vocabulary`` and write to ``out``:
    ``labels.json`` (image -> kept labels, the input format of ``freelabel generate``), ``scores.json``
    (image -> {label: probability}), ``errors.jsonl`` (one object per image that could not be read: path, stage,
    message) and ``config.json``.

    The vocabulary and the image list are checked before the model loads; unreadable images are reported and
    skipped. Returns the kept labels per image and how many images failed.
    """
    config = config or ClassifyConfig()
    if not vocabulary:
        raise FreelabelError("the label vocabulary is empty")
    try:
        vocabulary = list(dict.fromkeys(check_label(label) for label in vocabulary))
    except LabelError as error:
        raise FreelabelError(f"the label vocabulary: {error}") from None
    images_dir, out = Path(images_dir), Path(out)
    names = [str(p) for p in list_images(images_dir)]
    if not names:
        raise FreelabelError(f"no images found below {images_dir}")
    clip = load_clip(config.clip)
    labels, scores, failed = {}, {}, {}
    batch_names, batch = [], []

    def score_batch() -> None:
        probabilities = label_probabilities(clip, label_similarities(clip, batch, vocabulary))
        for name, row in zip(batch_names, probabilities):
            order = np.argsort(-row)
            labels[name] = [vocabulary[k] for k in order[:config.top_k] if row[k] >= config.min_probability]
            scores[name] = {vocabulary[k]: round(float(row[k]), 5) for k in order}
        batch_names.clear()
        batch.clear()

    images = prefetch_images([images_dir / name for name in names])
    for name, (_, image) in tqdm(zip(names, images), total=len(names), desc="classifying", unit="image", disable=None):
        if isinstance(image, ImageReadError):
            failed[name] = str(image)
            continue
        batch_names.append(name)
        batch.append(image)
        if len(batch) == config.batch_size:
            score_batch()
    if batch:
        score_batch()
    write_json(out / "labels.json", labels)
    write_json(out / "scores.json", scores)
    write_jsonl(out / ERRORS, ({"path": str(images_dir / name), "stage": "read", "message": message}
                               for name, message in failed.items()))
    write_json(out / "config.json", {"config": asdict(config), "images": str(images_dir),
                                     "vocabulary": vocabulary, **provenance()})
    return labels, len(failed)
