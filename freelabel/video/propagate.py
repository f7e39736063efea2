"""Carrying class probabilities from key frames to the frames between, by optical flow.

Each frame between two key frames gets the previous key frame's probabilities warped forward frame by frame and
the next key frame's warped backward (flow between consecutive frames, composed: classical flow fails on long jumps),
blended by temporal distance. A pixel whose flow fails the forward-backward check (disocclusion, flow error) drops
out of the chain it failed in; where both chains dropped it, or the blend is not confident, it becomes 255.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from freelabel.config import option
from freelabel.errors import ConfigError
from freelabel.io.masks import IGNORE_INDEX
from freelabel.pseudo.config import CrfConfig
from freelabel.video.flow import FlowConfig, OpticalFlow

# OpenCV's most channels in one image (CV_CN_MAX); more classes are warped in slices
MAX_CHANNELS = 512


@dataclass
class PropagationConfig:
    """How masks travel between key frames."""

    flow: FlowConfig = option(default_factory=FlowConfig, help="Optical flow between consecutive frames.")
    consistency_alpha: float = option(0.01, help="Forward-backward check: |f + b|^2 < alpha (|f|^2 + |b|^2) + beta.")
    consistency_beta: float = option(0.5, help="Beta of the forward-backward check (Sundaram et al., 2010), in "
                                     "pixels^2.")
    min_confidence: float = option(0.5, help="Propagated pixels whose top probability is below this become 255.")
    # 0.6 was chosen on toy clips, never on the real clips that only report (figures: docs/results.md, "Video")
    flagged_min_confidence: float | None = option(0.6, help="Pixels that no chain reaches validly (failing the flow "
                                                  "check on every side) keep the blend of the chains where its top "
                                                  "probability reaches this (the key frames agree), else 255; None "
                                                  "= always 255.")
    crf: CrfConfig | None = option(None, help="A dense CRF on each propagated frame's blended probabilities and its "
                                   "own pixels, to snap boundaries to that frame's edges (before the confidence "
                                   "rules above); None = the blend as it is.")

    def __post_init__(self) -> None:
        if isinstance(self.flow, dict):
            self.flow = FlowConfig(**self.flow)
        if isinstance(self.crf, dict):
            self.crf = CrfConfig(**self.crf)
        if self.consistency_alpha < 0 or self.consistency_beta < 0:
            raise ConfigError("consistency_alpha and consistency_beta must be >= 0")
        for name in ("min_confidence", "flagged_min_confidence"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")


def warp(values: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward warping: ``out[y, x] = values[y + flow[y, x, 1], x + flow[y, x, 0]]`` (bilinear, OpenCV's remap at
    1/32 pixel; outside the frame, its border values).

    values: (H, W, C) float32 of the source frame, channels last as OpenCV keeps them. flow: (H, W, 2) float32, from
    each target pixel to where it is in the source. Returns the warped (H, W, C) float32 values and (H, W) bool:
    True where the source point is inside the frame.
    """
    height, width = flow.shape[:2]
    ys, xs = _pixel_grid(height, width)
    x, y = xs + flow[..., 0], ys + flow[..., 1]
    inside = (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)
    # fixed-point maps made once serve every slice of channels
    map_xy, map_fraction = cv2.convertMaps(x, y, cv2.CV_16SC2)
    slices = [cv2.remap(np.ascontiguousarray(values[..., i:i + MAX_CHANNELS]), map_xy, map_fraction,
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
              for i in range(0, values.shape[-1], MAX_CHANNELS)]
    # OpenCV drops a single channel's axis
    slices = [s[..., None] if s.ndim == 2 else s for s in slices]
    return (slices[0] if len(slices) == 1 else np.concatenate(slices, axis=-1)), inside


@functools.lru_cache(maxsize=2)
def _pixel_grid(height: int, width: int) -> np.ndarray:
    """(2, H, W) float32 row and column indices, made once per frame size (every warp of a clip needs them)."""
    grid = np.mgrid[0:height, 0:width].astype(np.float32)
    grid.flags.writeable = False
    return grid


def consistent(backward: np.ndarray, forward_there: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Forward-backward check for a target frame: backward (H, W, 2) flow from target to source; forward_there
    (H, W, 2): the flow from source to target sampled where ``backward`` points (``warp`` of the forward flow by
    ``backward``). Returns (H, W) bool: True where following ``backward`` and then the forward flow comes back within
    the tolerance."""
    loop = backward + forward_there

    def squared_length(vectors: np.ndarray) -> np.ndarray:  # of (H, W, 2) vectors; numpy's sum over 2 is slow
        return vectors[..., 0] ** 2 + vectors[..., 1] ** 2

    tolerance = alpha * (squared_length(backward) + squared_length(forward_there)) + beta
    return squared_length(loop) < tolerance


def one_hot(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) class indices (255 = unknown) -> (num_classes, H, W) float32 probabilities; unknown pixels get a
    uniform distribution."""
    probabilities = np.eye(num_classes, dtype=np.float32)[np.minimum(mask, num_classes - 1)]
    probabilities[mask == IGNORE_INDEX] = 1.0 / num_classes
    return probabilities.transpose(2, 0, 1)


class Propagator:
    """Propagates key-frame probabilities over the frames between, one gap at a time (only that gap's frames are
    held in memory). Flow, warps and blends run in OpenCV and numpy: without refinement, no torch is imported."""

    def __init__(self, config: PropagationConfig | None = None, device: str = "cpu"):
        """device: where the CRF refines the propagated frames (the labeler's); flow and warps run on the CPU."""
        self.config = config or PropagationConfig()
        self.device = device
        self.flow = OpticalFlow(self.config.flow)
        self._flows: dict[tuple[int, int], np.ndarray] = {}

    def _chain(self, frames: Sequence[np.ndarray], order: Sequence[int], start: np.ndarray
               ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Warp ``start`` (the (H, W, C) probabilities of ``frames[order[0]]``) along ``order`` step by step.
        Returns, for ``order[1:]``, the (H, W, C) probabilities and (H, W) bool validity (inside, consistent all
        along the way)."""
        config = self.config
        channels = start.shape[-1]
        valid = np.ones(start.shape[:2], dtype=bool)
        current, out = start, []
        for source, target in zip(order, order[1:]):
            backward, forward = self._flow(frames, target, source), self._flow(frames, source, target)
            # the validity map, and the forward flow the check samples, travel as more channels of the same warp
            warped, inside = warp(np.concatenate([current, valid[..., None].astype(np.float32), forward], axis=-1),
                                  backward)
            current, carried, forward_there = warped[..., :channels], warped[..., channels] > 0.5, warped[..., -2:]
            valid = carried & inside & consistent(backward, forward_there, config.consistency_alpha,
                                                  config.consistency_beta)
            out.append((current, valid))
        return out

    def _flow(self, frames: Sequence[np.ndarray], a: int, b: int) -> np.ndarray:
        """Flow from ``frames[a]`` to ``frames[b]``, computed once per gap (both chains use each pair)."""
        if (a, b) not in self._flows:
            self._flows[(a, b)] = self.flow(frames[a], frames[b])
        return self._flows[(a, b)]

    def between(self, frames: Sequence[np.ndarray], first: np.ndarray | None, last: np.ndarray | None
                ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Probabilities and masks for the frames of one gap that are not key frames.

        frames: (H, W, 3) uint8 RGB frames in order. first: (C, H, W) float32 probabilities of ``frames[0]`` if it
        is a key frame, else None (a gap before the first key frame); last: the same for ``frames[-1]`` (None: a gap
        after the last key frame). Returns per frame that is not a key frame (``frames[1:-1]`` between two key
        frames): the (C, H, W) float32 blend of the chains that reach it, weighted by temporal distance and validity
        (by temporal distance alone where none does; refined if ``config.crf``: the gap's frames as one batch, on
        ``device``), and the (H, W) uint8 mask (255 = not confident).
        """
        if first is None and last is None:
            raise ValueError("a gap needs at least one key frame's probabilities")
        start, end = (1 if first is not None else 0), (len(frames) - 1 if last is not None else len(frames))
        if end <= start:
            return []
        self._flows = {}
        span = len(frames) - 1
        chains = []  # (probabilities and validity of frames[start:end], weight of frame t)
        if first is not None:
            chains.append((self._chain(frames, range(0, end), _channels_last(first))[start - 1:],
                           lambda t: (span - t) / span))
        if last is not None:
            backward = self._chain(frames, range(span, start - 1, -1), _channels_last(last))[::-1]
            chains.append((backward, lambda t: t / span))
        self._flows = {}
        blends, reached = [], []
        for i, t in enumerate(range(start, end)):
            temporal = [weight(t) if len(chains) == 2 else 1.0 for _, weight in chains]
            blended, valid = self._blend([chain[i][0] for chain, _ in chains], temporal,
                                         [chain[i][1] for chain, _ in chains])
            blends.append(blended)
            reached.append(valid)
        probabilities = np.stack(blends)  # (B, H, W, C)
        if self.config.crf is not None:
            probabilities = self._refine(probabilities, frames[start:end])
        results = []
        for blended, valid in zip(probabilities, reached):
            confidence, mask = blended.max(axis=-1), blended.argmax(axis=-1).astype(np.uint8)
            mask[valid & (confidence < self.config.min_confidence)] = IGNORE_INDEX
            fallback = self.config.flagged_min_confidence
            mask[~valid if fallback is None else ~valid & (confidence < fallback)] = IGNORE_INDEX
            results.append((blended.transpose(2, 0, 1), mask))
        return results

    def _refine(self, probabilities: np.ndarray, frames: Sequence[np.ndarray]) -> np.ndarray:
        """The CRF on a gap's (B, H, W, C) blends and their (H, W, 3) frames, in one call (the torch backend refines
        them as a batch, on ``device``). Returns (B, H, W, C) float32."""
        import torch  # only refinement needs torch: a run without it starts in a fraction of the time

        from freelabel.pseudo.crf import refine

        images = torch.from_numpy(np.stack(frames)).to(self.device)
        batch = torch.from_numpy(np.ascontiguousarray(probabilities.transpose(0, 3, 1, 2))).to(self.device)
        return refine(batch, images, self.config.crf).cpu().numpy().transpose(0, 2, 3, 1)

    @staticmethod
    def _blend(probabilities: list[np.ndarray], temporal: list[float], valid: list[np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray]:
        """Weighted mean of the chains' (H, W, C) probabilities, weights = temporal x (H, W) bool validity; where
        no chain is valid, the temporal weights alone (the blend regardless of the check). Returns the blend and
        (H, W) bool: where some chain is valid."""
        weights = np.stack([np.float32(w) * v for w, v in zip(temporal, valid)])
        total = weights.sum(axis=0)
        reached = total > 0
        # the weights are normalised on (H, W) before they meet the C channels: one pass over those
        fallback = np.asarray(temporal, dtype=np.float32)[:, None, None] / sum(temporal)
        weights = np.where(reached, weights / np.maximum(total, 1e-6), fallback).astype(np.float32)
        blend = probabilities[0] * weights[0][..., None]
        for chain, weight in zip(probabilities[1:], weights[1:]):
            blend += chain * weight[..., None]
        return blend, reached


def _channels_last(probabilities: np.ndarray) -> np.ndarray:
    """(C, H, W) -> contiguous (H, W, C) float32, the layout OpenCV warps."""
    return np.ascontiguousarray(probabilities.transpose(1, 2, 0), dtype=np.float32)
