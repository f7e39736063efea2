"""Fitting a preset to labelled images: a staged grid search over map, fusion, background, PAMR and CRF settings.

Each stage tries its grid with every other setting held at the best so far and keeps the winner (ties keep the
earlier candidate, the current settings first): maps (method and its setting, feature surgery, view scales) ->
fusion -> background (threshold, sharpness) -> PAMR -> CRF, in rounds (the pipeline's ``rounds``: a second round
re-fits the first stages under the chosen refinement). Candidates are scored by the one mIoU of ``freelabel
evaluate`` (pixels marked ignore count as wrong) over the tuning images, whose image-level labels are the classes
present in their masks.
Images are split into chunks scored in parallel worker processes, each loading the CLIP once; a candidate that
only changes what happens after the image pass reuses the cached image features.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from freelabel.clip.dense import check_supported
from freelabel.clip.config import ClipConfig
from freelabel.clip.loading import LoadedClip, load_clip
from freelabel.errors import ConfigError
from freelabel.io.images import read_image
from freelabel.io.labels import class_lookup
from freelabel.io.masks import read_mask
from freelabel.metrics import ConfusionMatrix
from freelabel.pseudo.config import LabelerConfig
from freelabel.pseudo.labeler import Labeler
from freelabel.pseudo.select import choose_labels

# What the image pass depends on: candidates that differ only elsewhere share one set of image features.
IMAGE_PASS_FIELDS = ("method", "surgery_blocks", "gaussian_std", "input_size", "scales", "flip", "window")


def image_pass_key(config: LabelerConfig) -> tuple[str, ...]:
    """The settings of ``config`` that its image pass depends on: configs with one key share cached features."""
    return tuple(str(getattr(config, field)) for field in IMAGE_PASS_FIELDS)


@dataclass(frozen=True)
class LabelledImage:
    """A tuning or held-out image: where it is, its mask, and its labels (the classes present in the mask)."""

    image_path: Path  # (H, W, 3) image file
    mask_path: Path  # (H, W) class-index mask, 255 = not labelled
    labels: tuple[str, ...]  # class names present in the mask, background excluded


def stage_grids(depth: int, methods: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The candidates of each stage, as override dicts for ``LabelerConfig.with_overrides``, in search order.

    depth: the number of blocks of the model's image tower (surgery's value-value blocks are tried at 1/4 .. all of
    it). methods: the map methods the maps stage tries (names of ``freelabel.pseudo.config.METHODS``); None = all.
    Each map candidate names its method and setting and sets feature surgery (relevance has none: the method's
    own), so it reads the same whatever the current method.
    """
    blocks = sorted({max(1, round(depth * f)) for f in (0.25, 0.5, 0.75, 1.0)})
    settings = ([dict(method="surgery", surgery_blocks=b) for b in blocks]
                + [dict(method="naclip", gaussian_std=std) for std in (3.0, 5.0, 10.0)]
                + [dict(method="sclip"), dict(method="clearclip")])
    settings = [s for s in settings if methods is None or s["method"] in methods]
    surgeries = [dict(feature_surgery=f) for f in (True, False)]
    views = [dict(scales=s) for s in ((1.0,), (1.0, 1.5), (0.75, 1.0, 1.5))]
    maps = [dict(setting, **view, **surgery) for setting in settings for view in views for surgery in surgeries]
    if methods is None or "relevance" in methods:  # gradients per label: no feature surgery
        maps += [dict(method="relevance", feature_surgery=None, **view) for view in views]
    crf = [dict(use_crf=True, crf_bilateral_compat=w, crf_bilateral_sxy=sxy, crf_bilateral_srgb=srgb,
                crf_gaussian_compat=g)
           for w in (1.0, 3.0, 10.0, 30.0, 50.0) for sxy in (5.0, 10.0, 20.0) for srgb in (6.0, 13.0, 30.0)
           for g in (0.0, 1.0)]
    return {
        "maps": maps,
        "fusion": [dict(fusion="softmin", softmin_temperature=t) for t in (0.05, 0.1, 0.3, 1.0)]
        + [dict(fusion="mean"), dict(fusion="max")],
        "background": [dict(background_threshold=t, sharpness=s) for t in (0.5, 0.6, 0.7, 0.8, 0.9)
                       for s in (10.0, 20.0, 40.0)],
        "pamr": [dict(use_pamr=False)] + [dict(use_pamr=True, pamr_iterations=n, pamr_dilations=d)
                                          for n in (5, 10) for d in ((1, 2), (4, 8), (8, 16))],
        "crf": [dict(use_crf=False)] + crf,
    }


def score_images(labeler_for: Callable[[LabelerConfig], Labeler], configs: Sequence[LabelerConfig],
                 images: Sequence[LabelledImage], classes: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """Confusion counts of each config over ``images``.

    labeler_for: gives a ``Labeler`` for a config (one per image-pass setting, made once). classes: the masks'
    class names, index 0 background. Returns per config {"mask": counts with ignore, "dense": counts of the dense
    argmax}, each (C, C + 1) int64 as ``ConfusionMatrix.counts``.
    """
    groups: dict[tuple, list[int]] = {}
    for index, config in enumerate(configs):
        groups.setdefault(image_pass_key(config), []).append(index)
    matrices = [{"mask": ConfusionMatrix(len(classes)), "dense": ConfusionMatrix(len(classes))} for _ in configs]
    for item in images:
        image, truth = read_image(item.image_path), read_mask(item.mask_path)
        to_global = class_lookup(["background", *item.labels], classes, unknown=len(classes))
        for members in groups.values():
            labeler = labeler_for(configs[members[0]])
            labeler.set_image(image)
            for index in members:
                labeler.config = configs[index]  # segment-time settings only: the cached features still hold
                result = labeler.segment(item.labels)
                matrices[index]["mask"].update(to_global[result.mask], truth)
                matrices[index]["dense"].update(to_global[result.probabilities.argmax(axis=0)], truth)
    return [{key: matrix.counts for key, matrix in pair.items()} for pair in matrices]


def scores_from_counts(counts: dict[str, np.ndarray]) -> dict[str, float]:
    """{"miou": with ignore counted wrong, "dense_miou": of the dense argmax, "ignored_fraction"} from counts."""
    mask, dense = ConfusionMatrix(len(counts["mask"])), ConfusionMatrix(len(counts["dense"]))
    mask.counts, dense.counts = counts["mask"], counts["dense"]
    return {"miou": round(mask.miou(), 4), "dense_miou": round(dense.miou(), 4),
            "ignored_fraction": round(mask.ignored_fraction(), 4)}


# One CLIP per worker process, loaded by its first task: an error there reaches the caller through the task's
# result (a failing pool initializer would instead be retried forever).
_worker_clip: tuple[ClipConfig, LoadedClip] | None = None


def _clip_in_worker(clip: ClipConfig) -> LoadedClip:
    global _worker_clip
    if _worker_clip is None or _worker_clip[0] != clip:
        torch.set_num_threads(1)  # one core per worker process
        _worker_clip = (clip, load_clip(clip))
    return _worker_clip[1]


def model_depth(clip: ClipConfig) -> int:
    """The number of blocks of the model's image tower (an open_clip ViT), from the copy this process scores with
    when it runs the search itself (``workers=1``), so the model is loaded once."""
    return len(check_supported(_clip_in_worker(clip).model.visual).transformer.resblocks)


def _labeler_cache(clip: LoadedClip) -> Callable[[LabelerConfig], Labeler]:
    labelers: dict[tuple, Labeler] = {}

    def labeler_for(config: LabelerConfig) -> Labeler:
        key = image_pass_key(config)
        if key not in labelers:
            labelers[key] = Labeler(clip, config=config)
        return labelers[key]

    return labeler_for


def _score_chunk(task: tuple[ClipConfig, list[LabelerConfig], list[LabelledImage], list[str]]) -> tuple[int, list]:
    clip, configs, images, classes = task
    return len(images), score_images(_labeler_cache(_clip_in_worker(clip)), configs, images, classes)


class ParallelScorer:
    """Scores configs over images in ``workers`` processes (or in this one for ``workers=1``), chunk by chunk."""

    def __init__(self, clip: ClipConfig, workers: int, chunk: int = 8):
        if workers < 1 or chunk < 1:
            raise ConfigError(f"workers and chunk must be at least 1, got {workers} and {chunk}")
        self.clip, self.chunk = clip, chunk
        self._pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None

    def score(self, configs: Sequence[LabelerConfig], images: Sequence[LabelledImage], classes: Sequence[str],
              progress: Callable[[int], None] = lambda n: None) -> list[dict[str, np.ndarray]]:
        """Summed confusion counts per config (see ``score_images``); ``progress(n)`` after each chunk of n
        images."""
        tasks = [(self.clip, list(configs), list(images[i:i + self.chunk]), list(classes))
                 for i in range(0, len(images), self.chunk)]
        results: Iterator = (self._pool.imap_unordered(_score_chunk, tasks) if self._pool
                             else map(_score_chunk, tasks))
        total = None
        for n, counts in results:
            total = counts if total is None else [{k: t[k] + c[k] for k in t} for t, c in zip(total, counts)]
            progress(n)
        return total

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()

    def __enter__(self) -> "ParallelScorer":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None and exc[0] is not None:
            self._pool.terminate()
        self.close()


def search_stage(start: LabelerConfig, grid: Sequence[dict[str, Any]], score: Callable[[list[LabelerConfig]], list]
                 ) -> tuple[LabelerConfig, list[tuple[dict[str, Any], dict[str, float]]]]:
    """One stage: ``start`` and each candidate of ``grid`` applied to it, scored by ``score``; returns the best
    config (the one mIoU; ties keep ``start``, then the earlier candidate) and every (overrides, scores) row."""
    configs = [start] + [start.with_overrides(**overrides) for overrides in grid]
    scored = [scores_from_counts(counts) for counts in score(configs)]
    best = max(range(len(configs)), key=lambda i: (scored[i]["miou"], -i))
    rows = [({"current": True}, scored[0])] + [(overrides, s) for overrides, s in zip(grid, scored[1:])]
    return dataclasses.replace(configs[best]), rows


SELECTION_TOP_K = (1, 2, 3, 4, 5, 6, 8)
SELECTION_MIN_SCORE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def selection_quality(views: Sequence[tuple[np.ndarray, list[np.ndarray]]], targets: np.ndarray, top_k: int,
                      min_score: float, max_overlap: float | None) -> dict[str, float]:
    """Precision, recall and F1 of ``choose_labels`` with these settings. views: per image its view probabilities
    and regions (``LabelSelector.view_probabilities``); targets: (N, V) bool, the classes each image shows."""
    chosen = np.zeros_like(targets, dtype=bool)
    for row, (probabilities, regions) in zip(chosen, views):
        row[choose_labels(probabilities, regions, top_k, min_score, max_overlap)] = True
    hits = float((chosen & targets).sum())
    precision, recall = hits / max(1, chosen.sum()), hits / max(1, targets.sum())
    return {"precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(2 * precision * recall / max(1e-9, precision + recall), 4)}


def fit_selection(views: Sequence[tuple[np.ndarray, list[np.ndarray]]], targets: np.ndarray,
                  max_overlap: float | None) -> tuple[int, float, dict[str, float]]:
    """The ``top_k`` and ``min_score`` (from a small grid) with the best F1 of the selection on labelled images
    (see ``selection_quality``; ties go to the smaller k, then the higher threshold). Returns them and the
    quality reached."""
    candidates = [(k, s, selection_quality(views, targets, k, s, max_overlap)) for k in SELECTION_TOP_K
                  for s in SELECTION_MIN_SCORE]
    return max(candidates, key=lambda c: (c[2]["f1"], -c[0], c[1]))
