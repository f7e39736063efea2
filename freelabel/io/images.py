"""Reading and writing RGB images, and finding them in folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from freelabel.errors import FreelabelError
from freelabel.io.files import atomic_path


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(FreelabelError):
    """An image file is missing, truncated or not an image."""


def check_rgb(image: object) -> np.ndarray:
    """Return ``image`` if it is an (H, W, 3) uint8 RGB array with H, W >= 1; else raise ``ValueError`` saying
    what it is instead."""
    if (not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8
            or 0 in image.shape):
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {getattr(image, 'shape', type(image).__name__)} "
                         f"{getattr(image, 'dtype', '')}".rstrip())
    return image


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
    check_rgb(image)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format=Image.registered_extensions()[path.suffix.lower()])


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files below ``folder`` (recursively, common formats), sorted, relative to ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FreelabelError(f"image folder {folder} does not exist")
    return sorted(p.relative_to(folder) for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."))


def prefetch_images(paths: Sequence[str | os.PathLike], lookahead: int = 4
                    ) -> Iterator[tuple[Path, np.ndarray | ImageReadError]]:
    """Read images in a background thread, ``lookahead`` ahead of the consumer, so decoding overlaps compute.

    Yields (path, image) with image (H, W, 3) uint8, or (path, ImageReadError) for an unreadable file, in order.
    """
    from concurrent.futures import ThreadPoolExecutor

    def load(path: Path) -> np.ndarray | ImageReadError:
        try:
            return read_image(path)
        except ImageReadError as error:
            return error

    paths = [Path(p) for p in paths]
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [(path, pool.submit(load, path)) for path in paths[:lookahead]]
        for index in range(len(paths)):
            path, future = pending.pop(0)
            if index + lookahead < len(paths):
                ahead = paths[index + lookahead]
                pending.append((ahead, pool.submit(load, ahead)))
            yield path, future.result()
