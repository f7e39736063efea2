"""``freelabel review``: the page for looking at a folder of masks, written into ``OUT/review/``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from freelabel.exchange import read_label_folder
from freelabel.review import ReviewConfig, write_review


def review(folder: str | Path, images: str | Path | None = None, out: str | Path | None = None,
           config: ReviewConfig | None = None) -> dict[str, Any]:
    """Write the review page of the freelabel output ``folder`` (``generate``, ``predict``, ``video`` or
    ``import``) into ``out`` (default ``folder/review``). images: the image folder or video file, when not the one
    its manifest names (required after ``import``). Returns {"index": path of index.html, "images": count,
    "bytes": size of the page folder, "seconds": time taken}."""
    started = time.monotonic()
    index = write_review(read_label_folder(folder, images), out, config)
    size = sum(path.stat().st_size for path in index.parent.rglob("*") if path.is_file())
    return {"index": index, "images": len(list((index.parent / "thumbs").iterdir())), "bytes": size,
            "seconds": round(time.monotonic() - started, 1)}
