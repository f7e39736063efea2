"""``freelabel import``: labels corrected in another tool back into freelabel masks (palette PNGs named like the
images, ``classes.txt``) that ``evaluate``, ``tune --masks`` and ``train --val-masks`` read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from freelabel.errors import FreelabelError
from freelabel.exchange import IMPORT_FORMATS, import_coco, import_cvat, import_labelstudio
from freelabel.io.labels import read_classes


def import_masks(source: str | Path, format: str, out: str | Path, classes: str | Path | None = None
                 ) -> dict[str, Any]:
    """Read ``source`` (``coco``: a COCO JSON file; ``labelstudio``: Label Studio's JSON export; ``cvat``: an
    unzipped Segmentation Mask 1.1 folder) into the label folder ``out``. classes: the ``classes.txt`` the
    export came from, whose order the imported classes keep where names match (else the file's own order).
    Pixels no annotation covers are 255. Returns {"out": out, "images": count, "classes": class names}."""
    readers = {"coco": import_coco, "labelstudio": import_labelstudio, "cvat": import_cvat}
    if format not in IMPORT_FORMATS:
        raise FreelabelError(f"unknown format {format!r}: one of {', '.join(IMPORT_FORMATS)}")
    out = readers[format](source, out, read_classes(classes) if classes is not None else None)
    return {"out": out, "images": sum(1 for _ in Path(out).rglob("*.png")),
            "classes": read_classes(out / "classes.txt")}
