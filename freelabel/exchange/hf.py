"""An image folder with ``metadata.jsonl`` that Hugging Face ``datasets.load_dataset("imagefolder", ...)`` reads
with an ``image`` and an ``annotation`` column (the palette masks; 255 = ignore) and a ``labels`` column."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from freelabel.exchange.folder import LabelFolder, LabelledImage
from freelabel.io.images import ImageReadError, write_image
from freelabel.io.files import write_text
from freelabel.io.labels import write_classes


def export_hf(folder: LabelFolder, out: str | os.PathLike) -> Path:
    """Write ``out/images/<name>`` (the images, copied; a video's frames as PNG), ``out/annotations/<name>.png``
    (the masks), ``out/classes.txt`` and ``out/metadata.jsonl`` (one line per image: ``file_name``,
    ``annotation_file_name``, ``labels``). Returns ``out``."""
    out = Path(out)
    lines = []
    for item, pixels in _sources(folder):
        image = Path("images") / (item.name if item.image is not None else Path(item.name).with_suffix(".png"))
        annotation = Path("annotations") / Path(item.name).with_suffix(".png")
        for path in (out / image, out / annotation):
            path.parent.mkdir(parents=True, exist_ok=True)
        if pixels is None:
            shutil.copyfile(item.image, out / image)
        elif isinstance(pixels, ImageReadError):
            raise pixels
        else:
            write_image(out / image, pixels)
        shutil.copyfile(item.mask, out / annotation)
        lines.append({"file_name": image.as_posix(), "annotation_file_name": annotation.as_posix(),
                      "labels": list(item.entry.get("labels", []))})
    write_classes(out / "classes.txt", folder.classes)
    write_text(out / "metadata.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    return out


def _sources(folder: LabelFolder) -> Iterator[tuple[LabelledImage, np.ndarray | ImageReadError | None]]:
    """Each item with None (its image file is copied) or, for a video's frames, its decoded pixels."""
    if all(item.image is not None for item in folder.items):
        return ((item, None) for item in folder.items)
    return folder.pixels()
