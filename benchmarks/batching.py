"""Batches across images: images/s and peak memory of ``segment_batch`` at several batch sizes, with a ViT-B/16-sized
CLIP (random weights: speed is the same as with real ones) at 448 px.

The labeler is the product's default for the model (its preset: 2 scales x flip, 4 views) with the ``torch`` CRF
and ``input_size=448``; the images are toy scenes (stream 11) enlarged to 448 x 448, each with its true labels, so a
batch is one size (one encoder call per view size, one CRF call). ``--segmenter`` also times a segmenter of the
default architecture (random heads: a trained one costs the same) at the same input size, labels given.

Each (model, batch size) runs in a fresh process: one batch to warm up, then ``--n`` images in batches, timed.
Peak memory is what segmenting adds: the process's peak resident set size from the moment the model is loaded and
the images are made (Linux's ``VmHWM``, reset then through ``/proc/self/clear_refs``) minus its resident set size
at that moment, the warm-up batch included; on a GPU, also ``torch.cuda.max_memory_allocated`` over the same span.

    .venv/bin/python benchmarks/batching.py [--batches 1,4,8] [--n 8] [--device cpu|cuda] [--segmenter]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

SIZE = 448


def _memory_mb(field: str) -> float:
    """A field of /proc/self/status in MB: ``VmRSS`` (resident set size now) or ``VmHWM`` (its peak)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # kB


def measure(model: str, batch: int, n: int, device: str) -> dict[str, float]:
    """Warm up on one batch, then segment ``n`` images in batches of ``batch``; images/s and memory (see above)."""
    from freelabel.cards import model_preset
    from freelabel.clip.loading import load_clip
    from freelabel.pseudo.labeler import Labeler
    from freelabel.segmenter.factory import architecture_config, create_segmenter
    from freelabel.segmenter.predictor import Segmenter
    from freelabel.toy.world import scenes

    torch.manual_seed(0)
    clip = load_clip("ViT-B-16", "random", device=device)
    if model == "labeler":
        segmenter = Labeler(clip, config=model_preset("ViT-B-16").labeler.with_overrides(input_size=SIZE,
                                                                                        crf_backend="torch"))
    else:
        segmenter = Segmenter(create_segmenter(clip, architecture_config("rankseg")), clip, [], SIZE)
    toy = list(scenes(11, batch + n))
    images = [scene.image.repeat(SIZE // 64, 0).repeat(SIZE // 64, 1) for scene in toy]
    labels = [scene.labels for scene in toy]
    segmenter.prepare_labels(sorted({label for image_labels in labels for label in image_labels}))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    baseline = _memory_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:  # the peak restarts from here
        clear_refs.write("5")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    segmenter.segment_batch(images[:batch], labels[:batch])
    sync()
    started = time.perf_counter()
    for start in range(batch, batch + n, batch):
        segmenter.segment_batch(images[start:start + batch], labels[start:start + batch])
    sync()
    seconds = time.perf_counter() - started
    result = {"images_per_second": n / seconds,
              "peak_rss_delta_mb": _memory_mb("VmHWM") - baseline}
    if device.startswith("cuda"):
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,4,8", help="batch sizes")
    parser.add_argument("--n", type=int, default=8, help="timed images per batch size (a multiple of each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--segmenter", action="store_true", help="also time the segmenter")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.n, args.device)))
        return
    batches = [int(b) for b in args.batches.split(",")]
    if any(args.n % b for b in batches):
        raise SystemExit(f"--n {args.n} must be a multiple of every batch size {batches}")
    parts = []
    for model in ("labeler", "segmenter") if args.segmenter else ("labeler",):
        rates = {}
        for batch in batches:
            done = subprocess.run([sys.executable, __file__, "--child", model, str(batch), "--n", str(args.n),
                                   "--device", args.device], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{model} at batch {batch} failed:\n{done.stderr[-2000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            rates[batch] = figures["images_per_second"]
            gpu = f" gpu_peak={figures['gpu_peak_mb']:.0f}MB" if "gpu_peak_mb" in figures else ""
            parts.append(f"{model} b{batch}={figures['images_per_second']:.3f} img/s "
                         f"(peak_rss +{figures['peak_rss_delta_mb']:.0f}MB{gpu})")
        parts.append(f"{model} b{batches[-1]}/b{batches[0]}={rates[batches[-1]] / rates[batches[0]]:.2f}x")
    print(f"batching: device={args.device} ViT-B-16 random {SIZE}px, labeler = default preset (4 views) + torch CRF, "
          f"{SIZE}x{SIZE} toy scenes, n={args.n} timed per batch size: " + ", ".join(parts))


if __name__ == "__main__":
    main()
