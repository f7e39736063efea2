"""Classical optical flow from OpenCV (no weights to download), at a working resolution that keeps it fast."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from freelabel.config import option
from freelabel.errors import ConfigError
from freelabel.io.images import check_rgb

METHODS = ("dis", "farneback")
DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


@dataclass
class FlowConfig:
    """How dense optical flow between two frames is computed."""

    method: str = option("dis", flag="--flow", choices=METHODS, help="Optical flow method: dis (OpenCV's Dense "
                         "Inverse Search) or farneback.")
    dis_preset: str = option("medium", choices=tuple(DIS_PRESETS), help="DIS speed/quality preset.")
    working_size: int | None = option(480, flag="--flow-size", help="Flow is computed with the frames' short side at "
                                      "most this (px); None = full size.")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown flow method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.dis_preset not in DIS_PRESETS:
            raise ConfigError(f"unknown DIS preset {self.dis_preset!r}; choose one of {', '.join(DIS_PRESETS)}")
        if self.working_size is not None and self.working_size < 16:
            raise ConfigError(f"working_size must be at least 16 pixels, got {self.working_size}")


class OpticalFlow:
    """Dense flow between frames of one size. ``flow(a, b)[y, x]`` is where pixel (x, y) of ``a`` moved to in
    ``b``, as (dx, dy) in pixels of the full frame."""

    def __init__(self, config: FlowConfig | None = None):
        self.config = config or FlowConfig()
        self._dis = (cv2.DISOpticalFlow_create(DIS_PRESETS[self.config.dis_preset])
                     if self.config.method == "dis" else None)

    def _working(self, frame: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        size = self.config.working_size
        height, width = grey.shape
        if size is None or min(height, width) <= size:
            return grey
        scale = size / min(height, width)
        return cv2.resize(grey, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a, b: (H, W, 3) uint8 RGB frames of one size. Returns (H, W, 2) float32 flow from a to b in pixels."""
        check_rgb(a)
        check_rgb(b)
        if a.shape != b.shape:
            raise ValueError(f"frames differ in size: {a.shape[:2]} and {b.shape[:2]}")
        small_a, small_b = self._working(a), self._working(b)
        if self._dis is not None:
            flow = self._dis.calc(small_a, small_b, None)
        else:
            flow = cv2.calcOpticalFlowFarneback(small_a, small_b, None, pyr_scale=0.5, levels=4, winsize=21,
                                                iterations=3, poly_n=7, poly_sigma=1.5, flags=0)
        height, width = a.shape[:2]
        if flow.shape[:2] != (height, width):
            scale = np.array([width / flow.shape[1], height / flow.shape[0]], dtype=np.float32)
            flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR) * scale
        return flow.astype(np.float32, copy=False)
