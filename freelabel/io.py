"""Reading and writing images, masks, class lists and label files; every write is atomic."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from freelabel.errors import FreelabelError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
IGNORE_INDEX = 255


class ImageReadError(FreelabelError):
    """An image file is missing, truncated or not an image."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` in one rename, so readers
    never see a half-written file and a killed run leaves no partial output (only a stray temp file at worst)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; give the file the usual mode
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB (alpha dropped, greyscale expanded).

    Raises ``ImageReadError`` naming the file when it is missing, truncated or not an image.
    """
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ImageReadError(f"cannot read image {path}: {error}") from None


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image atomically; the format follows the suffix."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format=Image.registered_extensions()[path.suffix.lower()])


def palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour palette: (n, 3) uint8, index 0 black; 255 is drawn white (ignore)."""
    colours = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours[index] = (r, g, b)
    if n > IGNORE_INDEX:
        colours[IGNORE_INDEX] = (255, 255, 255)
    return colours


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write an (H, W) uint8 class-index mask as a palette PNG (pixel value = class index) atomically."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"expected (H, W) uint8 mask, got {mask.shape} {mask.dtype}")
    image = Image.fromarray(mask, mode="P")
    image.putpalette(palette().tobytes())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a class-index mask PNG as (H, W) uint8 (palette indices, not colours)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise ImageReadError(f"{path} is a {image.mode} image, not a class-index (P or L) mask")
            return np.asarray(image, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ImageReadError(f"cannot read mask {path}: {error}") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, content: object) -> None:
    """Write JSON atomically, indented, with a trailing newline."""
    write_text(path, json.dumps(content, indent=2) + "\n")


def write_classes(path: str | os.PathLike, names: Sequence[str]) -> None:
    """Write ``classes.txt``: one ``index name`` line per class, index 0 first (as in ../shared/datasets)."""
    write_text(path, "".join(f"{i} {name}\n" for i, name in enumerate(names)))


def read_classes(path: str | os.PathLike) -> list[str]:
    """Read ``classes.txt`` (``index name`` lines, ``#`` comments) into a list indexed by class index.

    A line for 255 (the ignore value, e.g. ``255 unlabeled``) is allowed and left out of the list.
    """
    entries: dict[int, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        index, _, name = line.partition(" ")
        if not index.isdigit() or not name.strip():
            raise FreelabelError(f"{path}:{number}: expected 'index name', got {line!r}")
        if int(index) != IGNORE_INDEX:
            entries[int(index)] = name.strip()
    if sorted(entries) != list(range(len(entries))):
        raise FreelabelError(f"{path}: class indices must run 0..N-1 without gaps")
    return [entries[i] for i in range(len(entries))]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files below ``folder`` (recursively, common formats), sorted, relative to ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FreelabelError(f"image folder {folder} does not exist")
    return sorted(p.relative_to(folder) for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."))


def provenance() -> dict[str, object]:
    """Versions of what produced an output, stored beside it."""
    import open_clip
    import torch

    from freelabel import __version__

    return {"versions": {"freelabel": __version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
                         "numpy": np.__version__, "python": platform.python_version()}}


def read_json(path: str | os.PathLike) -> Mapping:
    """Read a JSON file; a malformed one raises ``FreelabelError`` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise FreelabelError(f"cannot read JSON {path}: {error}") from None


def read_label_vocabulary(spec: str) -> list[str]:
    """Labels to choose from: a ``classes.txt`` (``index name`` lines; ``background`` is left out), a text file
    with one label per line, or a comma-separated list (``"cat,dog"``). Returns the labels in order, unique."""
    path = Path(spec)
    if path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if lines and all(line.split(" ", 1)[0].isdigit() and " " in line for line in lines):
            names = [name for name in read_classes(path) if name != "background"]
        else:
            names = lines
    elif path.suffix in {".txt", ".json", ".csv"} or os.sep in spec:
        raise FreelabelError(f"label file {spec} does not exist")
    else:
        names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise FreelabelError(f"no labels in {spec!r}")
    return list(dict.fromkeys(names))


def read_image_labels(spec: str) -> dict[str, list[str]] | list[str]:
    """Labels per image, or one label list for every image.

    spec: a JSON file mapping image paths (relative to the image folder) to label lists; a CSV file with
    ``image,labels`` rows where labels are separated by ``|`` or ``;``; or anything ``read_label_vocabulary``
    accepts (then the same labels apply to every image). Returns a dict, or a list for the shared case.
    """
    path = Path(spec)
    if path.suffix.lower() == ".json" and path.is_file():
        content = read_json(path)
        if not isinstance(content, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in content.values()):
            raise FreelabelError(f"{path} must map each image path to a list of label strings")
        return {str(k): list(dict.fromkeys(v)) for k, v in content.items()}
    if path.suffix.lower() == ".csv" and path.is_file():
        import csv

        labels: dict[str, list[str]] = {}
        with path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), 1):
                if not row or row[0].startswith("#") or (number == 1 and row[0].strip().lower() == "image"):
                    continue
                if len(row) < 2:
                    raise FreelabelError(f"{path}:{number}: expected 'image,labels', got {row!r}")
                names = [n.strip() for n in row[1].replace(";", "|").split("|") if n.strip()]
                labels[row[0].strip()] = list(dict.fromkeys(names))
        return labels
    return read_label_vocabulary(spec)


def prefetch_images(folder: str | os.PathLike, names: Sequence[str], lookahead: int = 4
                    ) -> Iterator[tuple[str, np.ndarray | ImageReadError]]:
    """Read images in a background thread, ``lookahead`` ahead of the consumer, so decoding overlaps compute.

    Yields (name, image) with image (H, W, 3) uint8, or (name, ImageReadError) for an unreadable file, in order.
    """
    from concurrent.futures import ThreadPoolExecutor

    def load(name: str) -> np.ndarray | ImageReadError:
        try:
            return read_image(Path(folder) / name)
        except ImageReadError as error:
            return error

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [(name, pool.submit(load, name)) for name in names[:lookahead]]
        for index in range(len(names)):
            name, future = pending.pop(0)
            if index + lookahead < len(names):
                ahead = names[index + lookahead]
                pending.append((ahead, pool.submit(load, ahead)))
            yield name, future.result()
