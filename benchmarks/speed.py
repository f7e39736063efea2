"""Throughput of pseudo-mask generation with a ViT-B/16-sized CLIP (random weights: speed is the same as with
real ones) on COCO images.

End-to-end is the real ``generate`` pipeline (prefetching reader, 4 views, maps, fusion, CRF, atomic mask
writes, manifest) on ``--n`` images with their labels; its stages are timed by wrapping the pipeline's own calls.
The bare encoder rate is the same views through the same encoder in the same process, nothing else.
`--methods` times the same loop once per map method (the first one also gets the breakdown and the bare encoder
rate) and reports each method's seconds per image and its ratio to surgery's (surgery is timed too if not named).

    .venv/bin/python benchmarks/speed.py [--device cpu|cuda] [--n 50] [--crf pydensecrf|torch|none]
                                         [--methods surgery,naclip,sclip,clearclip,relevance]
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import freelabel.pseudo.labeler
import freelabel.run.job
from freelabel.clip.config import ClipConfig
from freelabel.clip.loading import load_clip
from freelabel.io import read_classes, read_image, read_mask
from freelabel.pseudo.config import LabelerConfig
from freelabel.pseudo.labeler import Labeler
from freelabel.pipelines.generate import GenerateConfig, generate

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "coco-object-val"


def _timed(stages: dict[str, float], stage: str, function, sync=lambda: None):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        result = function(*args, **kwargs)
        sync()
        stages[stage] += time.perf_counter() - started
        return result
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=50, help="COCO images")
    parser.add_argument("--crf", default="pydensecrf", choices=["pydensecrf", "torch", "none"])
    parser.add_argument("--size", type=int, default=448, help="short side of the views")
    parser.add_argument("--methods", default="surgery", help="map methods to time, comma-separated (the first gets "
                        "the breakdown)")
    args = parser.parse_args()
    methods = args.methods.split(",")
    if len(methods) > 1 and "surgery" not in methods:
        methods.append("surgery")  # the reference of the ratios
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    names = read_classes(DATA / "classes.txt")
    paths = sorted((DATA / "images").iterdir())[:args.n]
    # 4 views: two scales x flip, each view one 448-px-short-side pass; the rest is the default preset
    overrides = dict(input_size=args.size, scales=(1.0, 0.75), flip=True)
    if args.crf == "none":
        overrides["use_crf"] = False
    else:
        overrides["crf_backend"] = args.crf
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    work = Path(tempfile.mkdtemp(prefix="freelabel-speed-"))
    (work / "images").mkdir()
    labels = {}
    for path in paths:
        (work / "images" / path.name).symlink_to(path)
        present = sorted(set(np.unique(read_mask(DATA / "masks" / f"{path.stem}.png")).tolist()) - {0, 255})
        labels[path.name] = [names[i] for i in present] or ["person"]
    (work / "labels.json").write_text(json.dumps(labels))

    stages: dict[str, float] = defaultdict(float)
    Labeler.set_image = _timed(stages, "encoder", Labeler.set_image, sync)
    freelabel.pseudo.labeler.refine = _timed(stages, "crf", freelabel.pseudo.labeler.refine)
    Labeler.segment = _timed(stages, "segment", Labeler.segment)  # maps + fusion + crf
    freelabel.run.job.write_mask = _timed(stages, "write", freelabel.run.job.write_mask)
    per_image = {}  # method -> seconds per image of the generate loop
    for method in reversed(methods):  # the first named last: the stages and the manifest are its own
        stages.clear()
        torch.manual_seed(0)
        manifest = generate(work / "images", str(work / "labels.json"), work / f"out-{method}",
                            GenerateConfig(clip=ClipConfig("ViT-B-16", "random", args.device),
                                           overrides={**overrides, "method": method}))
        assert manifest["summary"]["done"] == len(paths), manifest["summary"]
        per_image[method] = manifest["summary"]["seconds"] / len(paths)
    loop_seconds, text_seconds = manifest["summary"]["seconds"], manifest["summary"]["text_seconds"]
    end_to_end = len(paths) / loop_seconds

    shutil.rmtree(work)
    timed = {"encoder": stages["encoder"], "maps+fusion": stages["segment"] - stages["crf"], "crf": stages["crf"],
             "write": stages["write"]}
    timed["read+other"] = max(loop_seconds - sum(timed.values()), 0.0)
    # bare encoder: a labeler over the same architecture, the same images and views, warmed up first
    labeler = Labeler(load_clip("ViT-B-16", "random", device=args.device),
                      config=LabelerConfig().with_overrides(**overrides, method=methods[0]))
    images = [read_image(p) for p in paths]
    labeler.set_image(images[0])
    started = time.perf_counter()
    for image in images:
        Labeler.set_image.__wrapped__(labeler, image)
    sync()
    encoder_rate = len(images) / (time.perf_counter() - started)

    breakdown = " ".join(f"{k}={100 * v / loop_seconds:.0f}%" for k, v in timed.items())
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    gpu = (f" gpu_peak={torch.cuda.max_memory_allocated() / 1e9:.2f}GB" if args.device.startswith("cuda") else "")
    costs = ("" if len(methods) == 1 else " per_image: " + " ".join(
        f"{m}={per_image[m]:.2f}s ({per_image[m] / per_image['surgery']:.2f}x surgery)" for m in methods))
    print(f"speed: device={args.device} n={len(paths)} method={methods[0]} views=4 size={args.size} crf={args.crf} "
          f"end_to_end={end_to_end:.3f} img/s encoder_only={encoder_rate:.3f} img/s "
          f"ratio={end_to_end / encoder_rate:.2f} [{breakdown}] label_encoding_once={text_seconds:.1f}s "
          f"peak_rss={peak_rss_gb:.2f}GB{gpu}{costs}")


if __name__ == "__main__":
    main()
