"""A small freelabel output folder for the review and exchange tests: images (PNG and JPEG, one in a subfolder),
palette masks with every class, some 255 (ignore) and several components, classes.txt and a manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from freelabel.io.files import write_json
from freelabel.io.images import write_image
from freelabel.io.labels import write_classes
from freelabel.io.masks import IGNORE_INDEX, write_mask

CLASSES = ["background", "red square", "blue circle", "green triangle"]


def make_label_folder(root: Path, n: int = 6, seed: int = 0) -> Path:
    """Write ``root/images`` and ``root/out`` (a generate-like output of ``n`` images); returns ``root/out``."""
    rng = np.random.default_rng(seed)
    images, out = root / "images", root / "out"
    entries = {}
    for i in range(n):
        name = f"sub/{i:03d}.jpg" if i == 1 else f"{i:03d}.png"
        height, width = 40 + 8 * i, 56 - 4 * i
        mask = np.zeros((height, width), np.uint8)
        labels = [CLASSES[1 + (i + k) % 3] for k in range(1 + i % 3)]
        for k, label in enumerate(labels):
            y, x = rng.integers(0, height - 12), rng.integers(0, width - 12)
            mask[y:y + 10, x:x + 10] = CLASSES.index(label)
            mask[(y + 20) % height:(y + 20) % height + 3, x:x + 3] = CLASSES.index(label)  # a second component
        mask[:i + 1, :2 * i + 1] = IGNORE_INDEX  # image i ignores more than image i - 1
        image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        write_image(images / name, image)
        write_mask(out / Path(name).with_suffix(".png"), mask)
        entries[name] = {"status": "done", "labels": labels,
                         "ignored_fraction": round(float((mask == IGNORE_INDEX).mean()), 4),
                         "label_scores": [round(0.5 + 0.1 * k, 4) for k in range(len(labels))]}
    entries["broken.png"] = {"status": "failed", "stage": "read", "reason": "unreadable"}
    write_classes(out / "classes.txt", CLASSES)
    write_json(out / "manifest.json", {"images_dir": str(images), "classes": CLASSES, "images": entries})
    return out
