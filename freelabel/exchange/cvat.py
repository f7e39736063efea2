"""CVAT's Segmentation Mask 1.1 format (Pascal VOC layout), to and from label folders.

``labelmap.txt`` names each class and its colour (the palette's), ``SegmentationClass/<image>.png`` holds RGB
masks in those colours and ``ImageSets/Segmentation/default.txt`` lists the images. CVAT refuses a colour its
label map does not declare, so the ignore value (255) becomes background or a declared ``ignore`` label.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from PIL import Image

from freelabel.errors import FreelabelError
from freelabel.exchange.folder import LabelFolder, merge_classes, write_label_folder
from freelabel.io.files import atomic_path, write_text
from freelabel.io.masks import IGNORE_INDEX, palette, read_mask

IGNORE_LABEL = "ignore"  # the label that holds 255 with --ignore-as ignore-label (white, as in the palette)
IgnoreAs = Literal["background", "ignore-label"]


def export_cvat(folder: LabelFolder, out: str | os.PathLike, ignore_as: IgnoreAs = "ignore-label") -> Path:
    """Write ``folder``'s masks in Segmentation Mask 1.1 into ``out`` (zip its contents to import it into CVAT).

    ignore_as: ``ignore-label`` declares an ``ignore`` label (white) for 255 pixels, so they come back as 255;
    ``background`` paints them background (they come back as 0). Returns ``out``."""
    if ignore_as not in ("background", "ignore-label"):
        raise FreelabelError(f"ignore_as must be background or ignore-label, not {ignore_as!r}")
    out = Path(out)
    colours = palette()
    if ignore_as == "background":
        colours[IGNORE_INDEX] = colours[0]
    labels = [*folder.classes] + ([IGNORE_LABEL] if ignore_as == "ignore-label" else [])
    indices = list(range(len(folder.classes))) + ([IGNORE_INDEX] if ignore_as == "ignore-label" else [])
    write_text(out / "labelmap.txt", "# label:color_rgb:parts:actions\n" + "".join(
        f"{name}:{','.join(str(int(c)) for c in colours[index])}::\n" for name, index in zip(labels, indices)))
    stems = []
    for item in folder.items:
        stem = str(Path(item.name).with_suffix(""))
        path = out / "SegmentationClass" / f"{stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Image.fromarray(colours[read_mask(item.mask)]).save(tmp, format="PNG")
        stems.append(stem)
    write_text(out / "ImageSets" / "Segmentation" / "default.txt", "".join(f"{stem}\n" for stem in stems))
    return out


def read_labelmap(path: str | os.PathLike) -> list[tuple[str, tuple[int, int, int]]]:
    """The (name, RGB colour) lines of a ``labelmap.txt``, in order."""
    labels = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, colour = line.split(":")[:2]
            labels.append((name, tuple(int(c) for c in colour.split(","))))
    return labels


def import_cvat(path: str | os.PathLike, out: str | os.PathLike, original: Sequence[str] | None = None) -> Path:
    """Read a Segmentation Mask 1.1 folder (CVAT's export, unzipped) into a label folder ``out``: each colour of
    ``labelmap.txt`` becomes its class (``ignore`` becomes 255 unless ``original`` has such a class). original:
    the class list the export came from (kept order), or None. Returns ``out``."""
    path = Path(path)
    if not (path / "labelmap.txt").is_file():
        raise FreelabelError(f"{path} is not a Segmentation Mask 1.1 folder (no labelmap.txt)")
    labelmap = read_labelmap(path / "labelmap.txt")
    names = [name for name, _ in labelmap if name != IGNORE_LABEL or (original and IGNORE_LABEL in original)]
    classes, index_of = merge_classes(names, original)
    table = {(r << 16) | (g << 8) | b: index_of.get(name, IGNORE_INDEX) for name, (r, g, b) in labelmap}
    keys = np.array(sorted(table))
    values = np.array([table[k] for k in keys], dtype=np.uint8)
    masks = {}
    for mask_path in sorted((path / "SegmentationClass").rglob("*.png")):
        with Image.open(mask_path) as image:
            rgb = np.asarray(image.convert("RGB")).astype(np.int64)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        position = np.clip(np.searchsorted(keys, packed), 0, keys.size - 1)
        if (keys[position] != packed).any():
            raise FreelabelError(f"{mask_path} holds colours labelmap.txt does not declare")
        masks[str(mask_path.relative_to(path / "SegmentationClass"))] = values[position]
    return write_label_folder(out, classes, masks)
