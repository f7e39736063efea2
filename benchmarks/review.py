"""The review page on 10,000 toy scenes vs 100: time to write it, its size on disk, and the time until its first
grid is drawn in headless Chromium (goal < 2 s), printed as one line.

The masks are not from ``freelabel generate`` (10,000 images would take hours on a CPU): each is the scene's exact
mask with one random rectangle set to 255 (ignore), so ignored fractions vary; the manifest names the scene's
labels, as a generate folder's does. The page does not depend on how the masks were made. The 100,000 line is
the 10,000-image page with its data repeated ten times (names made unique, thumbnails hard links): what opening
a page of 100,000 costs, without writing 100,000 scenes. "grid" is the time from
navigation start until the first page of overlays is in the document and painted; "images" until its thumbnails
have all loaded (median of 3 loads each, a fresh browser).

    .venv/bin/python benchmarks/review.py [--n 10000] [--small 100] [--work /tmp/freelabel-review-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import toy_scenes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import headless_chromium  # noqa: E402 (the tests' browser set-up, not a copy)

from freelabel.exchange import read_label_folder  # noqa: E402
from freelabel.io import read_json, read_mask, write_json, write_mask  # noqa: E402
from freelabel.io.masks import IGNORE_INDEX  # noqa: E402
from freelabel.review import write_review  # noqa: E402

SEED = 12


def label_folder(scenes: Path, out: Path, n: int) -> Path:
    """A generate-like output of the first ``n`` scenes (written once): exact masks with an ignored rectangle."""
    if (out / "manifest.json").is_file():
        return out
    rng = np.random.default_rng(n)
    labels = read_json(scenes / "labels.json")
    entries = {}
    for name in sorted(labels)[:n]:
        mask = read_mask(scenes / "masks" / name)
        height, width = mask.shape
        y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
        mask[y:y + rng.integers(0, height // 2), x:x + rng.integers(0, width // 2)] = IGNORE_INDEX
        write_mask(out / name, mask)
        entries[name] = {"status": "done", "labels": labels[name],
                         "ignored_fraction": round(float((mask == IGNORE_INDEX).mean()), 4)}
    (out / "classes.txt").write_bytes((scenes / "classes.txt").read_bytes())
    write_json(out / "manifest.json", {"images_dir": str(scenes / "images"), "images": entries})
    return out


def first_grid(index: Path, loads: int = 3) -> tuple[float, float]:
    """Median seconds from navigation start to the first grid painted, and to its thumbnails loaded."""
    grid, images = [], []
    for _ in range(loads):
        driver = headless_chromium()
        try:
            driver.get(index.as_uri())
            deadline = time.monotonic() + 60
            while driver.execute_script("return window.REVIEW_TIMING && window.REVIEW_TIMING.grid !== undefined "
                                        "&& window.REVIEW_TIMING.images !== undefined") is not True:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{index}: no grid after 60 s")
                time.sleep(0.02)
            timing = driver.execute_script("return window.REVIEW_TIMING")
            if [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]:
                raise SystemExit(f"{index}: console errors")
        finally:
            driver.quit()
        grid.append(timing["grid"] / 1000)
        images.append(timing["images"] / 1000)
    return statistics.median(grid), statistics.median(images)


def repeated_page(index: Path, times: int) -> Path:
    """A copy of the page at ``index`` listing every image ``times`` times (a sibling folder, so that its relative
    links still hold); returns its index.html."""
    copy = index.parent.with_name(f"{index.parent.name}-x{times}")
    shutil.rmtree(copy, ignore_errors=True)
    (copy / "thumbs").mkdir(parents=True)
    for name in ("index.html", "review.js", "review.css"):
        shutil.copyfile(index.parent / name, copy / name)
    text = (index.parent / "data.js").read_text()
    data = json.loads(text[text.index("=") + 1:].rstrip().rstrip(";"))
    count = len(data["names"])
    for column in ("ignored", "labels", "scores", "areas", "images", "masks", "keys"):
        data[column] = data[column] * times
    data["names"] = [f"{k}/{name}" for k in range(times) for name in data["names"]]
    for n in range(count * times):
        os.link(index.parent / "thumbs" / f"{n % count}.jpg", copy / "thumbs" / f"{n}.jpg")
    (copy / "data.js").write_text("window.FREELABEL_REVIEW = " + json.dumps(data, separators=(",", ":")) + ";\n")
    return copy / "index.html"


def opened(index: Path) -> str:
    """How big the page's data is and how fast its first grid shows."""
    data = (index.parent / "data.js").stat().st_size / 2 ** 20
    grid, images = first_grid(index)
    return f"data.js {data:.2f} MiB, first grid {grid:.2f} s, its thumbnails loaded {images:.2f} s"


def measure(folder: Path) -> tuple[str, Path]:
    started = time.monotonic()
    index = write_review(read_label_folder(folder))
    seconds = time.monotonic() - started
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file()) / 2 ** 20  # apparent size
    count = sum(1 for _ in (index.parent / "thumbs").iterdir())
    return f"{count} images: written in {seconds:.1f} s, {size:.1f} MiB on disk, {opened(index)}", index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path("/tmp/freelabel-review-bench"))
    args = parser.parse_args()
    scenes = toy_scenes(args.work, SEED, args.n)
    small, _ = measure(label_folder(scenes, args.work / f"out{args.small}", args.small))
    large, index = measure(label_folder(scenes, args.work / f"out{args.n}", args.n))
    repeated = f"{10 * args.n} images (the {args.n} ten times): {opened(repeated_page(index, 10))}"
    print(f"review page, toy scenes (stream {SEED}): {small} | {large} | {repeated}")


if __name__ == "__main__":
    main()
