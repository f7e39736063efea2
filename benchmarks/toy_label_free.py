"""Label-free pseudo-masks in the toy world, as a user gets them: `freelabel generate --vocab classes.txt --model
freelabel-toy` (labels selected per image with the toy preset's selection settings, then masks among them) next to
`freelabel generate --labels` with the true labels, both scored by `freelabel evaluate` (ignored = wrong). Label
precision and recall of the selection (its labels.json against the true labels) and mAP (from the manifest's best
10 scores per image; a class outside them scores 0).

Held-out streams 3000, 3001, 3002 (300 scenes each, never used for training or tuning; the selection settings
were chosen on stream 7000): the figures are their mean [min-max].

    .venv/bin/python benchmarks/toy_label_free.py [--n 300] [--streams 3000,3001,3002]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
from common import evaluate, freelabel, spread, toy_scenes

from freelabel.io import read_classes
from freelabel.metrics import average_precision


def selection_quality(selection: Path, data: Path) -> dict[str, float]:
    """Precision, recall and mAP of ``selection`` (a classify folder) against the scenes' true labels."""
    classes = read_classes(data / "classes.txt")[1:]
    truth = json.loads((data / "labels.json").read_text())
    images = json.loads((selection / "manifest.json").read_text())["images"]
    names = sorted(truth)
    targets = np.array([[c in truth[name] for c in classes] for name in names])
    scores = np.array([[images[name]["scores"].get(c, 0.0) for c in classes] for name in names])
    chosen = np.array([[c in images[name]["labels"] for c in classes] for name in names])
    hits = (chosen & targets).sum()
    return {"precision": hits / max(1, chosen.sum()), "recall": hits / targets.sum(),
            "map": float(np.nanmean(average_precision(scores, targets)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--streams", default="3000,3001,3002")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="freelabel-label-free-"))
    rows = []
    for stream in (int(s) for s in args.streams.split(",")):
        data = toy_scenes(work, stream, args.n)
        freelabel("generate", str(data / "images"), "--vocab", str(data / "classes.txt"), "--model", "freelabel-toy",
                  "--out", str(work / f"free{stream}"))
        freelabel("generate", str(data / "images"), "--labels", str(data / "labels.json"), "--model",
                  "freelabel-toy", "--out", str(work / f"true{stream}"))
        row = {**selection_quality(work / f"free{stream}" / "selection", data),
               # a scene with no mask (no label selected for it) counts as all ignored, i.e. wrong everywhere
               "free": evaluate(work / f"free{stream}", data, "--allow-missing")["miou"],
               "true": evaluate(work / f"true{stream}", data)["miou"]}
        print(f"stream {stream}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
        rows.append(row)
    gap = [100 * (r["free"] - r["true"]) for r in rows]
    print(f"toy_label_free: {len(rows)} held-out streams x {args.n} scenes: label precision "
          f"{spread([r['precision'] for r in rows])}, recall {spread([r['recall'] for r in rows])}, mAP "
          f"{spread([r['map'] for r in rows])}; pseudo-mask mIoU label-free {spread([r['free'] for r in rows])} vs "
          f"true labels {spread([r['true'] for r in rows])} ({statistics.mean(gap):+.1f} points, "
          f"[{min(gap):+.1f} to {max(gap):+.1f}])")


if __name__ == "__main__":
    main()
