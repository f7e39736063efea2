"""What a large vocabulary costs label-free selection, on this CPU, with a random ViT-B/16 (the cost of real weights).

1. Text encoding: 20 COCO names x the 32 default templates through the text tower at its full 77-token context
   (open_clip's encode_text) and cut to the longest prompt (freelabel.clip.text.encode_prompts): ms per prompt and
   the largest difference between the embeddings.
2. `freelabel classify` on 4 COCO val images brought to 448 px (short side), vocabularies of 10, 100, 1,000 and
   10,000 names: seconds per image with a cold text-embedding cache (a new folder: every name encoded) and warm
   (the same folder again). 10,000 names cold would take about an hour here (320,000 prompts), so that one cell is
   estimated as warm + 320,000 x the measured ms per prompt, and its warm cache is filled through the library's own
   cache with stand-in unit vectors of the right key and shape (the values do not change the timing).

3. What the check of the chosen labels against their own pseudo-masks adds (``LabelSelector.verify``, the default
   two rounds; a random model chooses no label, so classify above does not run it): 3 labels forced through it,
   seconds per image, next to the selection's own views (the whole image and its regions) on the same images.

    .venv/bin/python benchmarks/vocabulary_scaling.py [--sizes 10,100,1000,10000] [--images 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from common import FREELABEL

from freelabel.clip.loading import load_clip
from freelabel.clip.text import encode_prompts
from freelabel.io import read_image, write_image
from freelabel.pseudo.labeler import Labeler
from freelabel.pseudo.select import LabelSelector

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "coco-object-val"
NAMES = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
         "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow"]
ESTIMATE_ABOVE = 1000  # cold runs of larger vocabularies are estimated, not run


def text_speed() -> tuple[float, float, float]:
    """(ms per prompt at full context, ms per prompt truncated, max abs difference)."""
    clip = load_clip("ViT-B-16", "random", text_cache="off")
    tokens = clip.tokenizer([t.format(n) for n in NAMES for t in clip.templates])
    with torch.no_grad():
        clip.model.encode_text(tokens[:8]), encode_prompts(clip.model, tokens[:8])  # warm-up
        started = time.perf_counter()
        full = clip.model.encode_text(tokens).float()
        full_ms = 1000 * (time.perf_counter() - started) / len(tokens)
        started = time.perf_counter()
        cut = encode_prompts(clip.model, tokens)
        cut_ms = 1000 * (time.perf_counter() - started) / len(tokens)
    return full_ms, cut_ms, float((full - cut).abs().max())


def classify(images: Path, vocabulary: Path, out: Path, cache: Path) -> float:
    """Seconds per image of one `freelabel classify` run (selection + vocabulary encoding or loading)."""
    env = {**os.environ, "FREELABEL_TEXT_CACHE": str(cache)}
    done = subprocess.run([FREELABEL, "classify", str(images), "--vocab", str(vocabulary), "--out", str(out),
                           "--model", "ViT-B-16", "--pretrained", "random"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    return (summary["seconds"] + summary["text_seconds"]) / summary["done"]


def check_cost(images: list[Path]) -> tuple[float, float]:
    """(s/image of the selection's views, s/image of checking 3 labels against their masks) with a random ViT-B/16
    and the library's default selection and labeler settings."""
    selector = LabelSelector(Labeler(load_clip("ViT-B-16", "random", text_cache="off")))
    selector.set_vocabulary(NAMES)
    views = checks = 0.0
    for path in images:
        image = read_image(path)
        started = time.perf_counter()
        selector.view_probabilities(image)
        views += time.perf_counter() - started
        started = time.perf_counter()
        selector.verify(image, [0, 1, 2])
        checks += time.perf_counter() - started
    return views / len(images), checks / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    work = Path(tempfile.mkdtemp(prefix="freelabel-vocabulary-"))
    full_ms, cut_ms, difference = text_speed()
    print(f"text tower: {full_ms:.1f} ms per prompt at full context, {cut_ms:.1f} truncated "
          f"({full_ms / cut_ms:.1f}x), max |difference| {difference:.2e}", flush=True)
    for path in sorted((DATA / "images").glob("*.jpg"))[:args.images]:
        image = read_image(path)
        scale = 448 / min(image.shape[:2])
        size = (round(image.shape[0] * scale), round(image.shape[1] * scale))
        resized = torch.nn.functional.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=size,
                                                  mode="bilinear", antialias=True)[0].permute(1, 2, 0)
        write_image(work / "images" / path.name.replace(".jpg", ".png"), resized.round().byte().numpy())
    views, checks = check_cost(sorted((work / "images").glob("*.png")))
    print(f"selection views {views:.2f} s/image; checking 3 labels against their masks (2 rounds) {checks:.2f}",
          flush=True)
    rows = []
    for size in (int(v) for v in args.sizes.split(",")):
        vocabulary = work / f"vocab{size}.txt"
        names = [f"{NAMES[i % len(NAMES)]} {i // len(NAMES)}" for i in range(size)]
        vocabulary.write_text("\n".join(names) + "\n")
        cache = work / f"cache{size}"
        if size > ESTIMATE_ABOVE:
            clip = load_clip("ViT-B-16", "random", text_cache=cache)
            stand_in = torch.nn.functional.normalize(torch.randn(size, clip.model.text_projection.shape[1]), dim=-1)
            clip._disk_cache(clip.templates).put(names, stand_in)
            warm = classify(work / "images", vocabulary, work / f"warm{size}", cache)
            cold, estimated = warm + size * len(clip.templates) * cut_ms / 1000 / args.images, True
        else:
            cold = classify(work / "images", vocabulary, work / f"cold{size}", cache)
            warm, estimated = classify(work / "images", vocabulary, work / f"warm{size}", cache), False
        rows.append((size, cold, warm, estimated))
        print(f"{size} names: cold {cold:.2f} s/image{' (estimated)' if estimated else ''}, warm {warm:.2f} s/image",
              flush=True)
    base = rows[0][2]
    print(f"vocabulary_scaling: text tower {full_ms:.1f} -> {cut_ms:.1f} ms/prompt ({full_ms / cut_ms:.1f}x, max diff "
          f"{difference:.1e}); s/image cold/warm " + ", ".join(
              f"{size}: {cold:.2f}{'*' if estimated else ''}/{warm:.2f}" for size, cold, warm, estimated in rows)
          + f"; warm {rows[-1][0]} vs {rows[0][0]} names {rows[-1][2] / base:.2f}x (* estimated); checking 3 labels "
          f"against their masks {checks:.2f} s/image (selection views {views:.2f})")


if __name__ == "__main__":
    main()
