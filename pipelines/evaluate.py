"""``freelabel evaluate``: score predicted masks against ground truth over a whole folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from freelabel.errors import FreelabelError
from freelabel.io import IGNORE_INDEX, read_classes, read_mask
from freelabel.metrics import ConfusionMatrix


def evaluate(pred_dir: str | Path, gt_dir: str | Path, classes_file: str | Path) -> dict:
    """Confusion matrix over every ground-truth mask below ``gt_dir`` and its prediction (same relative path,
    ``.png``) below ``pred_dir``.

    Predicted class indices are translated by name when ``pred_dir`` has its own ``classes.txt``; predicted
    names unknown to ``classes_file`` count as wrong. A missing prediction counts as all-ignore (every pixel a
    miss). Returns {"classes", "iou" (per class, None where absent), "miou", "pixel_accuracy",
    "ignored_fraction", "images", "missing", "confusion"}.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    names = read_classes(classes_file)
    gt_files = sorted(p.relative_to(gt_dir) for p in gt_dir.rglob("*.png"))
    if not gt_files:
        raise FreelabelError(f"no ground-truth masks (*.png) below {gt_dir}")
    lookup = np.arange(256, dtype=np.int64)
    if (pred_dir / "classes.txt").is_file():
        pred_names = read_classes(pred_dir / "classes.txt")
        lookup = np.full(256, len(names), dtype=np.int64)  # unknown names -> counted as a wrong class
        for index, name in enumerate(pred_names):
            lookup[index] = names.index(name) if name in names else len(names)
        lookup[IGNORE_INDEX] = IGNORE_INDEX
    matrix = ConfusionMatrix(len(names))
    missing = []
    for relative in gt_files:
        truth = read_mask(gt_dir / relative)
        pred_path = pred_dir / relative
        if pred_path.is_file():
            prediction = lookup[read_mask(pred_path)]
        else:
            missing.append(str(relative))
            prediction = np.full(truth.shape, IGNORE_INDEX, dtype=np.int64)
        matrix.update(prediction, truth)
    iou = matrix.iou()
    return {"classes": names, "iou": [None if np.isnan(v) else round(float(v), 4) for v in iou],
            "miou": round(matrix.miou(), 4), "pixel_accuracy": round(matrix.pixel_accuracy(), 4),
            "ignored_fraction": round(matrix.ignored_fraction(), 4), "images": len(gt_files), "missing": missing,
            "confusion": matrix.counts.tolist()}


def format_report(report: dict) -> str:
    """A readable table of per-class IoU and the totals."""
    rows = [f"{'class':<28} {'IoU':>7}"]
    for name, value in zip(report["classes"], report["iou"]):
        if value is not None:
            rows.append(f"{name:<28} {value:7.4f}")
    rows.append(f"{'mIoU':<28} {report['miou']:7.4f}")
    rows.append(f"{'pixel accuracy':<28} {report['pixel_accuracy']:7.4f}")
    rows.append(f"{'ignored (predicted 255)':<28} {report['ignored_fraction']:7.4f}")
    rows.append(f"images: {report['images']}, missing predictions: {len(report['missing'])}")
    return "\n".join(rows)
