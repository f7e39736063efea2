"""Cost of the trained segmenter against pseudo-mask generation, with a ViT-B/16-sized CLIP (random weights: speed
is the same as with real ones) on COCO images, all through the CLI in one run:

- `generate --input-size S` (the default preset: 2 scales x flip, CRF) images/s;
- `train --input-size S` (the default architecture, fine-tuned tower) images/s, per precision;
- `predict --labels` (the same labels) images/s, and its speed-up over generate.
Per-image rates exclude model loading and label encoding (each command reports its loop's seconds).

    .venv/bin/python benchmarks/segmenter_speed.py [--device cpu|cuda] [--n 24] [--size 448] [--precisions fp32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from common import freelabel

from freelabel.io import read_classes, read_mask

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "coco-object-val"
MODEL = ["--model", "ViT-B-16", "--pretrained", "random"]




def rate(folder: Path) -> float:
    """Images per second of a generate/predict folder's loop."""
    summary = json.loads((folder / "manifest.json").read_text())["summary"]
    return summary["done"] / summary["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=24, help="COCO images")
    parser.add_argument("--size", type=int, default=448, help="short side in pixels")
    parser.add_argument("--precisions", default="fp32", help="training precisions to time, e.g. fp32,bf16")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    work = Path(tempfile.mkdtemp(prefix="freelabel-segmenter-speed-"))
    names = read_classes(DATA / "classes.txt")
    labels = {}
    (work / "images").mkdir()
    for path in sorted((DATA / "images").iterdir())[:args.n]:
        (work / "images" / path.name).symlink_to(path)
        present = sorted(set(np.unique(read_mask(DATA / "masks" / f"{path.stem}.png")).tolist()) - {0, 255})
        labels[path.name] = [names[i] for i in present] or ["person"]
    (work / "labels.json").write_text(json.dumps(labels))
    device = ["--device", args.device]
    freelabel("generate", str(work / "images"), "--labels", str(work / "labels.json"), "--out", str(work / "pseudo"),
              "--input-size", str(args.size), *MODEL, *device)
    generate_rate = rate(work / "pseudo")
    training = {}
    for precision in args.precisions.split(","):
        run = work / f"run-{precision}"
        freelabel("train", str(work / "pseudo"), "--out", str(run), "--input-size", str(args.size), "--epochs", "1",
                  "--batch-size", str(args.batch_size), "--val-fraction", "0", "--precision", precision, *device)
        training[precision] = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    run = work / f"run-{args.precisions.split(',')[0]}"
    freelabel("predict", str(run), str(work / "images"), "--labels", str(work / "labels.json"), "--out",
              str(work / "predicted"), *device)
    predict_rate = rate(work / "predicted")
    train_part = ", ".join(f"{p} {m['images_per_second']} img/s" + (f" {m['gpu_peak_gb']} GB" if "gpu_peak_gb" in m
                                                                      else "") for p, m in training.items())
    print(f"segmenter_speed: device={args.device} n={args.n} size={args.size} ViT-B-16: generate "
          f"{generate_rate:.3f} img/s, predict --labels {predict_rate:.3f} img/s ({predict_rate / generate_rate:.1f}x "
          f"faster), train (batch {args.batch_size}) {train_part}")


if __name__ == "__main__":
    main()
