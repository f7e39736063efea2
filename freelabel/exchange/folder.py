"""Reading any freelabel output folder (``generate``, ``predict``, ``video``, ``import``) and writing one back.

A folder holds ``classes.txt`` (index 0 background), one palette PNG mask per image named like the image (255 =
ignore) and, except after ``import``, ``manifest.json`` naming the images (``images_dir``) or frames
(``frames``) and, per image, its labels, label scores and ignored fraction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from freelabel.errors import FreelabelError
from freelabel.io.files import read_json
from freelabel.io.images import ImageReadError, read_image
from freelabel.io.labels import read_classes, write_classes
from freelabel.io.masks import IGNORE_INDEX, write_mask
from freelabel.video.frames import is_video, read_frames


@dataclass(frozen=True)
class LabelledImage:
    """One image of a label folder and its mask."""

    name: str  # path relative to the image folder (a frame's name for a video file), as in the manifest
    mask: Path  # its palette PNG mask: values index the folder's classes, 255 = ignore
    image: Path | None  # its image file, or None for a frame inside a video file
    entry: dict[str, Any] = field(default_factory=dict)  # its manifest entry (labels, label_scores, ...), or {}


@dataclass(frozen=True)
class LabelFolder:
    """A freelabel output folder: its classes and its labelled images (those with a mask), sorted by name."""

    root: Path  # the folder
    classes: list[str]  # class names by index, 0 = background
    items: list[LabelledImage]  # the images with a mask
    source: Path | None  # the image folder or video file the masks were made from (None: unknown)

    def worst(self, n: int) -> LabelFolder:
        """The same folder with only its ``n`` worst images: the highest ignored fraction (as the review page
        opens), ties by name; kept in name order."""
        ranked = sorted(self.items, key=lambda item: (-item.entry.get("ignored_fraction", 0.0), item.name))
        chosen = {item.name for item in ranked[:n]}
        return replace(self, items=[item for item in self.items if item.name in chosen])

    def pixels(self) -> Iterator[tuple[LabelledImage, np.ndarray | ImageReadError]]:
        """Each item with its (H, W, 3) uint8 RGB image, or the ``ImageReadError`` that kept it from being read (a
        missing file, an unknown image folder), in ``items`` order; a video file is decoded once, in order."""
        if self.source is not None and is_video(self.source):
            wanted = {item.name: item for item in self.items}
            for frame in read_frames(self.source):
                if frame.name in wanted:
                    yield wanted.pop(frame.name), frame.pixels
            for item in wanted.values():
                yield item, ImageReadError(f"{self.source} has no frame {item.name}")
            return
        for item in self.items:
            if item.image is None:
                yield item, ImageReadError(f"no image for {item.name}: the image folder is unknown (pass it)")
                continue
            try:
                yield item, read_image(item.image)
            except ImageReadError as error:
                yield item, error


def read_label_folder(folder: str | os.PathLike, images: str | os.PathLike | None = None) -> LabelFolder:
    """Read a freelabel output folder.

    images: the image folder (or video file); None = the one its manifest names. Without a manifest (an
    ``import`` output) every ``*.png`` below ``folder`` is a mask. Raises ``FreelabelError`` when ``folder`` has no
    ``classes.txt``.
    """
    root = Path(folder)
    if not (root / "classes.txt").is_file():
        raise FreelabelError(f"{root} is not a freelabel output folder (no classes.txt)")
    classes = read_classes(root / "classes.txt")
    manifest = read_json(root / "manifest.json") if (root / "manifest.json").is_file() else {}
    source = images if images is not None else manifest.get("images_dir") or manifest.get("frames")
    source = Path(source) if source else None
    video = source is not None and is_video(source)
    if manifest:
        entries = {name: entry for name, entry in manifest.get("images", {}).items() if entry.get("status") == "done"}
    else:
        entries = {str(path.relative_to(root)): {} for path in sorted(root.rglob("*.png"))
                   if not any(part.startswith(".") for part in path.relative_to(root).parts)
                   and path.relative_to(root).parts[0] not in ("review", "scores")}
    items = []
    for name, entry in sorted(entries.items()):
        mask = root / Path(name).with_suffix(".png")
        if not mask.is_file():
            continue
        image = None if video or source is None else _image_path(source, name)
        items.append(LabelledImage(name, mask, image, entry))
    return LabelFolder(root, classes, items, source)


def _image_path(source: Path, name: str) -> Path:
    """The image ``name`` below ``source``; a mask listed without a manifest is named ``.png`` whatever the
    image's suffix, so the image with the same stem is looked for."""
    path = source / name
    if path.is_file():
        return path
    matches = sorted(path.parent.glob(path.stem + ".*"))
    return matches[0] if matches else path


def merge_classes(names: Sequence[str], original: Sequence[str] | None) -> tuple[list[str], dict[str, int]]:
    """The class list of imported masks: ``original``'s order (e.g. the ``classes.txt`` the export came from) for
    the names it holds, then the other names in ``names`` order; ``background`` stays index 0.

    Returns (classes, index of each name in ``names``)."""
    classes = list(original) if original else ["background"]
    for name in names:
        if name not in classes:
            classes.append(name)
    if len(classes) > IGNORE_INDEX:
        raise FreelabelError(f"{len(classes)} classes: a palette mask holds at most {IGNORE_INDEX} (255 = ignore)")
    return classes, {name: classes.index(name) for name in names}


def write_label_folder(out: str | os.PathLike, classes: Sequence[str], masks: dict[str, np.ndarray]) -> Path:
    """Write imported masks as a freelabel label folder: ``classes.txt`` and one palette PNG per image named like
    it (``name`` with ``.png``). masks: image name -> (H, W) uint8 class indices (255 = ignore). Returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_classes(out / "classes.txt", classes)
    for name, mask in masks.items():
        path = out / Path(name).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mask(path, mask)
    return out
