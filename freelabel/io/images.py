"""Reading and writing RGB images, and finding them in folders."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from freelabel.errors import FreelabelError
from freelabel.io.files import atomic_path


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Images with more pixels are refused before they are decoded (decompression bombs); a 100-megapixel photo is read.
MAX_PIXELS = 100_000_000
T, R = TypeVar("T"), TypeVar("R")


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


def read_image(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, as viewers show it.

    EXIF orientation is applied; greyscale, palette, CMYK and images with alpha become RGB (alpha dropped);
    16-bit images are scaled to 8 bits (/257) and float images from [0, 1] (or clipped to [0, 255] when their
    values exceed 1). Images of more than ``max_pixels`` pixels (None: no limit) are refused from their header,
    before any decoding. Raises ``ImageReadError`` naming the file for any of that and for a missing, truncated or
    undecodable file.
    """
    # PIL's own decompression-bomb limit is a process-wide setting, checked when a file is opened and again when
    # some formats (TIFF) decode: it is lifted for the whole read, under a lock, and max_pixels applies instead, so
    # that a raised limit is honoured and a refusal names freelabel's limit
    with _PIL_LIMIT_LOCK:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageReadError(f"cannot read image {path}: {width}x{height} is {width * height:,} pixels, "
                                         f"more than the limit of {max_pixels:,} (--max-pixels)")
                return _to_rgb(ImageOps.exif_transpose(image))
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError,
                MemoryError) as error:
            raise ImageReadError(f"cannot read image {path}: {type(error).__name__}: {error}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = limit


_PIL_LIMIT_LOCK = threading.Lock()


def _to_rgb(image: Image.Image) -> np.ndarray:
    """A decoded PIL image of any mode -> (H, W, 3) uint8."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # one channel wider than 8 bits
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            values = values / 257
        elif image.mode == "F" and values.size and np.nanmax(values) <= 1:
            values = values * 255
        grey = np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL converts palette transparency through RGBA
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image atomically; the format follows the suffix."""
    check_rgb(image)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format=Image.registered_extensions()[path.suffix.lower()])


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files below ``folder`` (recursively, common formats), sorted, relative to ``folder``.

    Hidden files are left out. Symbolic links to directories are not followed (so link loops cannot trap the
    search); a link to a missing file is listed, so that reading it reports it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FreelabelError(f"image folder {folder} does not exist")
    return sorted(p.relative_to(folder) for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink())
                  and not p.name.startswith("."))


def read_ahead(read: Callable[[T], R], items: Sequence[T], lookahead: int = 4) -> Iterator[R]:
    """``read(item)`` for each of ``items``, in order, run in a background thread ``lookahead`` items ahead of the
    consumer, so that reading (decoding) overlaps compute. ``read`` should turn its item's errors into values."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(read, item) for item in items[:lookahead]]
        for index in range(len(items)):
            future = pending.pop(0)
            if index + lookahead < len(items):
                pending.append(pool.submit(read, items[index + lookahead]))
            yield future.result()


def read_image_or_error(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> np.ndarray | ImageReadError:
    """``read_image``, with any failure to read or decode the file returned as an ``ImageReadError`` (this file's,
    never the run's) instead of raised."""
    try:
        return read_image(path, max_pixels)
    except ImageReadError as error:
        return error
    except Exception as error:  # any decoder failure is this file's, never the run's  # noqa: BLE001
        return ImageReadError(f"cannot read image {path}: {type(error).__name__}: {error}")
