"""Frames of a clip, streamed in order: a folder of images, or a video file decoded by OpenCV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from freelabel.errors import FreelabelError
from freelabel.io.images import MAX_PIXELS, ImageReadError, list_images, read_image

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass
class Frame:
    """One frame: its position in the clip, its name (the output mask is ``name`` with ``.png``), and the (H, W, 3)
    uint8 RGB pixels, or the ``ImageReadError`` that kept them from being read."""

    index: int
    name: str
    pixels: np.ndarray | ImageReadError


def frame_name(index: int) -> str:
    """The name of frame ``index`` of a video file: ``frame_000123.png``."""
    return f"frame_{index:06d}.png"


def frame_index(name: str) -> int:
    """Inverse of ``frame_name``; raises ``ValueError`` for other names."""
    stem = Path(name).stem
    if not stem.startswith("frame_") or not stem[6:].isdigit():
        raise ValueError(f"{name!r} is not a video frame name like {frame_name(0)!r}")
    return int(stem[6:])


def is_video(path: Path) -> bool:
    """Whether ``path`` is a video file (by its suffix) rather than a folder of frames."""
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def frame_names(path: str | Path) -> list[str] | None:
    """The names of a folder's frames (image paths relative to it, in sorted order), or None for a video file
    (its frames are named as they are decoded). Raises ``FreelabelError`` for anything else, and for a video file
    OpenCV cannot open."""
    path = Path(path)
    if path.is_dir():
        names = [str(p) for p in list_images(path)]
        if not names:
            raise FreelabelError(f"no frames (images) found below {path}")
        return names
    if is_video(path):
        capture = cv2.VideoCapture(str(path))  # opened once here, so that a file that is no video fails before work
        opened = capture.isOpened()
        capture.release()
        if not opened:
            raise FreelabelError(f"cannot open the video {path} (unknown format or not a video)")
        return None
    raise FreelabelError(f"{path} is neither a folder of frames nor a video file ({', '.join(sorted(VIDEO_SUFFIXES))})")


def read_frames(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> Iterator[Frame]:
    """The frames of a folder (sorted names) or a video file, one at a time (never all in memory). A frame that
    cannot be read is yielded with its error; a video that ends before the frame count its header announces
    (truncated) yields one error per missing frame."""
    path = Path(path)
    names = frame_names(path)
    if names is not None:
        for index, name in enumerate(names):
            try:
                yield Frame(index, name, read_image(path / name, max_pixels))
            except ImageReadError as error:
                yield Frame(index, name, error)
        return
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FreelabelError(f"cannot open the video {path} (unknown format or not a video)")
    try:
        announced = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield Frame(index, frame_name(index), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
        for missing in range(index, announced):
            yield Frame(missing, frame_name(missing), ImageReadError(
                f"{path}: frame {missing} could not be decoded (the file ends after {index} of {announced} frames: "
                "truncated?)"))
    finally:
        capture.release()
