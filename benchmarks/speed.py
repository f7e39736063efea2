"""Throughput of pseudo-mask generation with a ViT-B/16-sized CLIP (random weights: speed is the same as with
real ones) on COCO images: end-to-end images/s against the same run's bare image-encoder passes, a breakdown
per stage, peak memory, and each CRF backend.

    .venv/bin/python benchmarks/speed.py [--device cpu|cuda] [--n 50] [--crf pydensecrf|torch|none]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from freelabel.clip import load_clip
from freelabel.crf import CrfConfig, refine
from freelabel.io import read_classes, read_image, read_mask
from freelabel.labeler import Labeler, LabelerConfig

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "coco-object-val"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=50, help="COCO images")
    parser.add_argument("--crf", default="pydensecrf", choices=["pydensecrf", "torch", "none"])
    parser.add_argument("--size", type=int, default=448, help="short side of the views")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    torch.manual_seed(0)
    clip = load_clip("ViT-B-16", "random", device=args.device)
    # 4 views: two scales x flip, each view one 448-px-short-side pass
    config = LabelerConfig(input_size=args.size, scales=(1.0, 0.75), flip=True,
                           crf=None if args.crf == "none" else CrfConfig(backend=args.crf))
    labeler = Labeler(clip, config=config)
    paths = sorted((DATA / "images").iterdir())[:args.n]
    labels_of = {}
    names = read_classes(DATA / "classes.txt")
    for path in paths:
        present = sorted(set(np.unique(read_mask(DATA / "masks" / f"{path.stem}.png")).tolist()) - {0, 255})
        labels_of[path] = [names[i] for i in present] or ["person"]

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    # warm-up (allocations, kernels), then the timed end-to-end run with its own breakdown
    labeler.set_image(read_image(paths[0]))
    labeler.segment(labels_of[paths[0]])
    stages: dict[str, float] = defaultdict(float)
    crf, labeler.config.crf = labeler.config.crf, None
    started = time.perf_counter()
    for path in paths:
        t0 = time.perf_counter()
        image = read_image(path)
        t1 = time.perf_counter()
        labeler.set_image(image)
        sync()
        t2 = time.perf_counter()
        result = labeler.segment(labels_of[path])
        t3 = time.perf_counter()
        if crf is not None:
            refine(result.probabilities, image, crf)
        t4 = time.perf_counter()
        stages["read"] += t1 - t0
        stages["encoder (all views)"] += t2 - t1
        stages["maps+fusion"] += t3 - t2
        stages["crf"] += t4 - t3
    end_to_end = len(paths) / (time.perf_counter() - started)
    labeler.config.crf = crf
    # bare encoder: the same views through the same encoder, nothing else
    images = [read_image(p) for p in paths]
    started = time.perf_counter()
    for image in images:
        labeler.set_image(image)
    sync()
    encoder_rate = len(images) / (time.perf_counter() - started)
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    gpu = (f" gpu_peak={torch.cuda.max_memory_allocated() / 1e9:.2f}GB" if args.device.startswith("cuda") else "")
    total = sum(stages.values())
    breakdown = " ".join(f"{k}={100 * v / total:.0f}%" for k, v in stages.items())
    print(f"speed: device={args.device} n={len(paths)} views=4 size={args.size} crf={args.crf} "
          f"end_to_end={end_to_end:.3f} img/s encoder_only={encoder_rate:.3f} img/s "
          f"ratio={end_to_end / encoder_rate:.2f} [{breakdown}] peak_rss={peak_rss_gb:.2f}GB{gpu}")


if __name__ == "__main__":
    main()
