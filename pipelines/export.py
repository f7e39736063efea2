"""``freelabel export``: a folder of masks in the formats of the tools people correct and train with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from freelabel.errors import FreelabelError
from freelabel.exchange import (EXPORT_FORMATS, export_coco, export_cvat, export_hf, export_labelstudio,
                                read_label_folder)


def export(folder: str | Path, format: str, out: str | Path, images: str | Path | None = None,
           worst: int | None = None, instances: bool = False, image_root: str | None = None,
           ignore_as: str = "ignore-label") -> dict[str, Any]:
    """Export the masks of the freelabel output ``folder`` into the directory ``out``.

    format: ``coco`` (``out/annotations.json``; ``instances``: one annotation per connected component),
    ``labelstudio`` (``out/tasks.json`` and ``out/config.xml``; ``image_root``: what image names are appended
    to, else absolute paths), ``cvat`` (Segmentation Mask 1.1; ``ignore_as``: ``ignore-label`` or ``background``
    for 255 pixels) or ``hf`` (an image folder with ``metadata.jsonl``). images: the image folder when not the
    one the manifest names. worst: only the images with the highest ignored fraction. Returns {"out": out,
    "images": count, "format": format}."""
    if format not in EXPORT_FORMATS:
        raise FreelabelError(f"unknown format {format!r}: one of {', '.join(EXPORT_FORMATS)}")
    label_folder = read_label_folder(folder, images)
    if worst is not None:
        label_folder = label_folder.worst(worst)
    if not label_folder.items:
        raise FreelabelError(f"{folder} holds no masks to export")
    out = Path(out)
    if format == "coco":
        export_coco(label_folder, out / "annotations.json", instances=instances)
    elif format == "labelstudio":
        export_labelstudio(label_folder, out, image_root=image_root)
    elif format == "cvat":
        export_cvat(label_folder, out, ignore_as=ignore_as)
    else:
        export_hf(label_folder, out)
    return {"out": out, "images": len(label_folder.items), "format": format}
