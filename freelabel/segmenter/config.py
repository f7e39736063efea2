"""``SegmenterConfig``: the architecture of the selected-label segmenter's head, validated when it is made."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from freelabel.errors import ConfigError


@dataclass
class SegmenterConfig:
    """The segmenter's layers on top of the CLIP image tower. Shipped configs live in
    ``freelabel/segmenter/configs/<name>.json`` (see ``freelabel.segmenter.factory``)."""

    surgery_blocks: int = 6  # last tower blocks given the value-value path whose dense embeddings feed the decoder
    feature_blocks: int = 4  # evenly spaced tower blocks (the last included) whose patch tokens feed the decoder
    decoder_dim: int = 256  # channels of the fused features at the patch grid (also the multi-label tokens' width)
    pixel_dim: int = 128  # channels of the pixel features at 1/4 resolution
    stem_dim: int = 32  # channels of the convolutional stem over the image at 1/4 (0 = no stem)
    embed_dim: int = 256  # dimension in which pixel and label embeddings are compared (cosine)
    heads: int = 8  # attention heads of the multi-label transformer block
    multilabel_grid: int = 8  # coarse features are pooled to grid x grid tokens for the multi-label head
    top_k: int = 25  # labels selected per image by the multi-label head; only they and background compete
    rank_norm: bool = True  # rank-adaptive temperatures (LayerNorm over ranks); False = one learned temperature

    def __post_init__(self) -> None:
        for name in ("feature_blocks", "decoder_dim", "pixel_dim", "embed_dim", "heads", "multilabel_grid", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("surgery_blocks", "stem_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if self.top_k > 254:  # masks are 8-bit: background, the labels and 255 (ignore)
            raise ConfigError(f"top_k must be at most 254, got {self.top_k}")
        if self.decoder_dim % self.heads:
            raise ConfigError(f"decoder_dim ({self.decoder_dim}) must be a multiple of heads ({self.heads})")
        for name in ("decoder_dim", "pixel_dim", "stem_dim"):
            if getattr(self, name) % 8:  # GroupNorm(8, ...)
                raise ConfigError(f"{name} must be a multiple of 8, got {getattr(self, name)}")
        if not isinstance(self.rank_norm, bool):
            raise ConfigError(f"rank_norm must be true or false, got {self.rank_norm!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready field values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SegmenterConfig:
        """Build from ``to_dict`` output; unknown keys raise ``ConfigError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown segmenter setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)
