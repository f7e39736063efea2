"""``freelabel evaluate``: the one scorer of predicted masks against ground truth over a whole folder.

It reports three numbers, each labelled:

- ``miou``: THE mIoU. Pixels the prediction marks ignore (255) count as wrong, so abstaining never raises it.
- ``dense_miou``: the mIoU of the dense argmax (no ignore), from the ``scores/<image>.npz`` files that
  ``freelabel generate --save-scores`` writes; None unless every ground-truth image has its score file.
- ``ignored_fraction``: the share of labelled ground-truth pixels that the prediction marked 255.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from freelabel.errors import FreelabelError
from freelabel.io.labels import class_lookup, read_classes
from freelabel.io.masks import IGNORE_INDEX, read_mask
from freelabel.metrics import ConfusionMatrix

SCORES_DIR = "scores"  # below the prediction folder, as ``freelabel generate --save-scores`` writes it
MISSING_NAMED = 5  # missing predictions named in the error


def evaluate(pred_dir: str | Path, gt_dir: str | Path, classes_file: str | Path, allow_missing: bool = False
             ) -> dict:
    """Score every ground-truth mask below ``gt_dir`` against its prediction below ``pred_dir`` (same relative
    path, ``.png``) and, where saved, its scores (``pred_dir/scores/<same relative path>.npz``).

    Predicted class indices are translated by name when ``pred_dir`` has its own ``classes.txt``, as are the
    per-image label lists of the score files; names unknown to ``classes_file`` count as a wrong class.
    allow_missing: score a ground-truth mask without a prediction as all-ignore (every pixel a miss) instead of
    raising. Raises ``FreelabelError`` naming the file for an unreadable file, a prediction (mask or scores) of
    another size than its ground truth, or a value beyond its class list.

    Returns {"classes": ground-truth class names, "iou": per class (None where absent), "miou": ignore counted
    wrong, "dense_miou": of the dense argmax (None unless every image has scores), "dense_images": images with a
    score file, "pixel_accuracy", "ignored_fraction": labelled pixels predicted 255, "images", "missing":
    relative paths scored as all-ignore, "confusion": (C, C + 1) counts as ``ConfusionMatrix.counts``}.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    classes = _read_class_list(classes_file)
    gt_files = sorted(p.relative_to(gt_dir) for p in gt_dir.rglob("*.png"))
    if not gt_files:
        raise FreelabelError(f"no ground-truth masks (*.png) below {gt_dir}")
    missing = [relative for relative in gt_files if not (pred_dir / relative).is_file()]
    if missing and not allow_missing:
        named = ", ".join(str(relative) for relative in missing[:MISSING_NAMED])
        raise FreelabelError(f"{len(missing)} of {len(gt_files)} ground-truth masks below {gt_dir} have no "
                             f"prediction below {pred_dir}: {named}{', ...' if len(missing) > MISSING_NAMED else ''}"
                             f" (--allow-missing scores them as all-ignore)")
    absent = set(missing)
    pred_classes_file = pred_dir / "classes.txt"
    if pred_classes_file.is_file():
        pred_names = _read_class_list(pred_classes_file)
        to_truth = truth_index_lookup(pred_names, classes, pred_classes_file)
        pred_source, pred_known = pred_classes_file, len(pred_names)
    else:  # the prediction's values are the ground truth's class indices
        to_truth = np.arange(IGNORE_INDEX + 1, dtype=np.int64)
        pred_source, pred_known = Path(classes_file), len(classes)
    score_files = [(pred_dir / SCORES_DIR / relative).with_suffix(".npz") for relative in gt_files]
    dense_images = sum(path.is_file() for path in score_files)
    matrix = ConfusionMatrix(len(classes))
    dense = ConfusionMatrix(len(classes)) if dense_images == len(gt_files) else None
    ignored = 0
    for relative, score_file in zip(gt_files, score_files):
        truth_file = gt_dir / relative
        truth = read_mask(truth_file)
        _check_values(truth, len(classes), truth_file, Path(classes_file))
        if relative in absent:
            prediction = np.full(truth.shape, IGNORE_INDEX, dtype=np.int64)
        else:
            prediction_file = pred_dir / relative
            raw = read_mask(prediction_file)
            _check_shape(raw.shape, truth.shape, prediction_file, truth_file)
            _check_values(raw, pred_known, prediction_file, pred_source)
            prediction = to_truth[raw]
        ignored += int(np.count_nonzero((prediction == IGNORE_INDEX) & (truth != IGNORE_INDEX)))
        matrix.update(prediction, truth)
        if dense is not None:
            dense.update(dense_argmax(score_file, classes, truth_file, truth.shape), truth)
    labelled = int(matrix.counts.sum())
    if labelled == 0:
        raise FreelabelError(f"the ground truth below {gt_dir} has no labelled pixels (all {IGNORE_INDEX})")
    return {"classes": classes, "iou": [None if np.isnan(v) else round(float(v), 4) for v in matrix.iou()],
            "miou": round(matrix.miou(), 4), "dense_miou": None if dense is None else round(dense.miou(), 4),
            "dense_images": dense_images, "pixel_accuracy": round(matrix.pixel_accuracy(), 4),
            "ignored_fraction": round(ignored / labelled, 4), "images": len(gt_files),
            "missing": [str(relative) for relative in missing], "confusion": matrix.counts.tolist()}


def truth_index_lookup(names: Sequence[str], classes: Sequence[str], source: Path) -> np.ndarray:
    """The one mapping of a list of label names to the ground truth's class indices, by name: for a prediction's
    ``classes.txt`` and for a score file's per-image label list alike.

    names: ``names[i]`` is the name of index ``i`` in the source. classes: the ground truth's class names.
    source: the file the names came from (named in errors). Returns (256,) int64: ``table[i]`` is the ground-truth
    index of ``names[i]``, or ``len(classes)`` (a wrong class, see ``ConfusionMatrix``) for a name the ground
    truth does not know; ``table[255]`` is 255 (ignore).
    """
    try:
        return class_lookup(names, classes, unknown=len(classes))
    except FreelabelError as error:
        raise FreelabelError(f"{source}: {error}") from None


def dense_argmax(score_file: Path, classes: Sequence[str], truth_file: Path, shape: tuple[int, int]
                 ) -> np.ndarray:
    """The dense argmax of one saved score file, as ground-truth class indices.

    score_file: ``.npz`` with ``probabilities`` (K+1, H, W) float over the image's own labels and ``labels``
    (K+1,) str ("background", then the image's labels in order). classes: the ground truth's class names.
    truth_file, shape: the ground-truth mask and its (H, W), which the scores must match. Returns (H, W) int64
    in 0..len(classes) (``len(classes)``: a label the ground truth does not know).
    """
    try:
        with np.load(score_file) as scores:
            probabilities, labels = scores["probabilities"], scores["labels"]
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise FreelabelError(f"cannot read scores {score_file}: {error}") from None
    if labels.ndim != 1 or probabilities.ndim != 3 or probabilities.shape[0] != len(labels):
        raise FreelabelError(f"{score_file}: expected probabilities (K+1, H, W) over its K+1 labels, got "
                             f"probabilities {probabilities.shape} and labels {labels.shape}")
    _check_shape(probabilities.shape[1:], shape, score_file, truth_file)
    to_truth = truth_index_lookup([str(label) for label in labels], classes, score_file)
    return to_truth[probabilities.argmax(axis=0)]


def _read_class_list(path: str | Path) -> list[str]:
    """``read_classes`` (which names the file when it cannot be read), with an empty list an error too."""
    names = read_classes(path)
    if not names:
        raise FreelabelError(f"{path} lists no classes")
    return names


def _check_shape(shape: tuple[int, ...], truth_shape: tuple[int, ...], path: Path, truth_file: Path) -> None:
    """Raise ``FreelabelError`` naming both files when a prediction's (H, W) differs from its ground truth's."""
    if tuple(shape) != tuple(truth_shape):
        raise FreelabelError(f"{path} is {shape[1]}x{shape[0]} (WxH) but its ground truth {truth_file} is "
                             f"{truth_shape[1]}x{truth_shape[0]}")


def _check_values(mask: np.ndarray, known: int, path: Path, classes_file: Path) -> None:
    """Raise ``FreelabelError`` naming ``path`` and ``classes_file`` when the (H, W) ``mask`` holds a value other
    than 255 (ignore) at or beyond ``known``, the number of classes that ``classes_file`` lists."""
    outside = (mask >= known) & (mask != IGNORE_INDEX)
    if outside.any():
        raise FreelabelError(f"{path} holds class {int(mask[outside].max())} but {classes_file} lists only {known} "
                             f"classes (0..{known - 1}; {IGNORE_INDEX} = ignore)")


def format_report(report: dict) -> str:
    """A readable table: per-class IoU (ignored = wrong), the three headline numbers, labelled, and counts."""
    width = 40
    rows = [f"{'class':<{width}} {'IoU':>7}"]
    for name, value in zip(report["classes"], report["iou"]):
        if value is not None:
            rows.append(f"{name:<{width}} {value:7.4f}")
    rows.append(f"{'mIoU (ignored = wrong)':<{width}} {report['miou']:7.4f}")
    dense = report["dense_miou"]
    dense_text = (f"{dense:7.4f}" if dense is not None
                  else f"{'n/a':>7} (scores for {report['dense_images']} of {report['images']} images)")
    rows.append(f"{'mIoU of the dense argmax (from scores)':<{width}} {dense_text}")
    rows.append(f"{'pixel accuracy':<{width}} {report['pixel_accuracy']:7.4f}")
    rows.append(f"{'ignored (predicted 255)':<{width}} {report['ignored_fraction']:7.4f}")
    rows.append(f"images: {report['images']}, with scores: {report['dense_images']}, "
                f"missing predictions (scored as all-ignore): {len(report['missing'])}")
    return "\n".join(rows)
