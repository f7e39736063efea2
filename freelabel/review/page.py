"""``OUT/review/``: a page that shows a freelabel output folder from ``file://``, with no server and nothing
fetched from the internet.

It holds ``index.html`` with its script and style, ``data.js`` (every image's name, ignored fraction, labels and
scores, class areas, in columns, so that 100,000 images load as one small script: browsers refuse to read JSON
files from ``file://``), ``thumbs/<n>.jpg`` (overlays at thumbnail size, from ``overlay_thumbnail``) and, for a
video file's frames, ``frames/<n>.jpg``. The full view shows the original image and mask files; its overlay is
the mask laid over the image in the browser.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from freelabel.config import option
from freelabel.errors import ConfigError
from freelabel.exchange.folder import LabelFolder
from freelabel.io.files import atomic_path, write_text
from freelabel.io.images import ImageReadError
from freelabel.io.masks import IGNORE_INDEX, palette, read_mask
from freelabel.io.overlay import overlay_thumbnail

STATIC = ("index.html", "review.js", "review.css")  # copied as they are from freelabel/review/static


@dataclass(frozen=True)
class ReviewConfig:
    """How the review page is written."""

    thumbnail_size: int = option(192, help="Longer side of a grid overlay, pixels.")
    thumbnail_quality: int = option(85, help="JPEG quality of the grid overlays.")
    # only one page's thumbnails are in the page at a time, so 100,000 images open as fast as 100
    page_size: int = option(60, help="Overlays per grid page.")
    opacity: float = option(0.5, help="Mask opacity in the overlays.")

    def __post_init__(self) -> None:
        if self.thumbnail_size < 16 or self.page_size < 1:
            raise ConfigError(f"thumbnail_size must be at least 16 and page_size at least 1, got {self.thumbnail_size} "
                              f"and {self.page_size}")
        if not 1 <= self.thumbnail_quality <= 100 or not 0 <= self.opacity <= 1:
            raise ConfigError(f"thumbnail_quality must be in 1..100 and opacity in [0, 1], got "
                              f"{self.thumbnail_quality} and {self.opacity}")


def _url(path: Path, start: Path) -> str:
    """A link from ``start`` to ``path``: relative where one exists (the folder can move with its images), else a
    ``file://`` URL."""
    try:
        return quote(Path(os.path.relpath(path, start)).as_posix())
    except ValueError:  # another drive
        return path.resolve().as_uri()


def review_data(folder: LabelFolder, page_dir: Path, config: ReviewConfig) -> dict[str, Any]:
    """Write the thumbnails (and a video's frames) into ``page_dir`` and return the page's data.

    Columns, one entry per image in ``folder.items`` order (the thumbnail of image ``n`` is ``thumbs/<n>.jpg``):
    ``names``; ``ignored`` (fraction of 255 pixels, from the manifest or the mask); ``labels`` (class indices of
    the manifest's labels, or of the classes in the mask when it names none); ``scores`` (the labels' scores or
    null); ``areas`` (per class present, [index, fraction of the image]); ``images`` and ``masks`` (links from
    ``page_dir``; null for an image that could not be read); ``keys`` (video key frames). ``problems`` holds
    [n, reason] per image that could not be read (listed all the same: its mask over grey), ``summary`` per class
    the images showing it and their mean area."""
    (page_dir / "thumbs").mkdir(parents=True, exist_ok=True)
    lookup = {name: index for index, name in enumerate(folder.classes)}
    columns: dict[str, list] = {k: [] for k in ("names", "ignored", "labels", "scores", "areas", "images", "masks",
                                                "keys")}
    problems = []
    counts = np.zeros(256, np.int64)
    area_sums = np.zeros(256, np.float64)
    for n, (item, image) in enumerate(folder.pixels()):
        mask = read_mask(item.mask)
        readable = not isinstance(image, ImageReadError)
        if not readable:
            problems.append([n, str(image)])
            image = np.full((*mask.shape, 3), 128, np.uint8)
        elif image.shape[:2] != mask.shape:
            image = np.asarray(Image.fromarray(image).resize(mask.shape[::-1], Image.Resampling.BILINEAR))
        with atomic_path(page_dir / "thumbs" / f"{n}.jpg") as tmp:
            Image.fromarray(overlay_thumbnail(image, mask, config.thumbnail_size, config.opacity)).save(
                tmp, format="JPEG", quality=config.thumbnail_quality)
        if not readable:
            columns["images"].append(None)
        elif item.image is None:  # a frame inside a video file: the full view needs it as a file
            (page_dir / "frames").mkdir(exist_ok=True)
            with atomic_path(page_dir / "frames" / f"{n}.jpg") as tmp:
                Image.fromarray(image).save(tmp, format="JPEG", quality=90)
            columns["images"].append(f"frames/{n}.jpg")
        else:
            columns["images"].append(_url(item.image, page_dir))
        fractions = np.bincount(mask.ravel(), minlength=256) / mask.size
        present = [int(i) for i in np.flatnonzero(fractions) if i != IGNORE_INDEX]
        counts[present] += 1
        area_sums[present] += fractions[present]
        labels = item.entry.get("labels")
        columns["names"].append(item.name)
        columns["ignored"].append(item.entry.get("ignored_fraction", round(float(fractions[IGNORE_INDEX]), 4)))
        columns["labels"].append([lookup[label] for label in labels if label in lookup] if labels is not None
                                 else [i for i in present if i != 0])
        columns["scores"].append(item.entry.get("label_scores"))
        columns["areas"].append([[i, round(float(fractions[i]), 4)] for i in present])
        columns["masks"].append(_url(item.mask, page_dir))
        columns["keys"].append(item.entry.get("key"))
    summary = [{"class": i, "images": int(counts[i]), "mean_area": round(float(area_sums[i] / counts[i]), 4)
                if counts[i] else None} for i in range(len(folder.classes))]
    return {"folder": str(folder.root), "classes": folder.classes,
            "colours": ["#" + bytes(c).hex() for c in palette()[:len(folder.classes)]],
            "page_size": config.page_size, "summary": summary, "problems": problems, **columns}


def write_review(folder: LabelFolder, out: str | os.PathLike | None = None,
                 config: ReviewConfig | None = None) -> Path:
    """Write the review page of ``folder`` into ``out`` (default ``folder.root / "review"``), replacing the page
    files, and return the path of its ``index.html``."""
    config = config or ReviewConfig()
    page_dir = Path(out) if out is not None else folder.root / "review"
    for stale in ("thumbs", "frames"):  # thumbnails are numbered: old ones would show other images
        shutil.rmtree(page_dir / stale, ignore_errors=True)
    data = review_data(folder, page_dir, config)
    # "</" is escaped so that no name can close the script element
    write_text(page_dir / "data.js", "window.FREELABEL_REVIEW = "
               + json.dumps(data, separators=(",", ":")).replace("</", "<\\/") + ";\n")
    for name in STATIC:
        write_text(page_dir / name, resources.files("freelabel.review").joinpath("static", name).read_text("utf-8"))
    return page_dir / "index.html"
