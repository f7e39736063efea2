"""``LabelerConfig``: every setting that shapes a pseudo-mask, validated when it is made."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from freelabel.errors import ConfigError
from freelabel.pseudo.crf import CrfConfig
from freelabel.pseudo.fusion import FUSIONS

METHODS = ("surgery", "relevance")


@dataclass
class LabelerConfig:
    """How label maps are computed, fused and turned into a mask. Saved beside every output.

    The field defaults are the library's default preset (``freelabel.pseudo.preset``); a model may ship its own.
    """

    method: str = "surgery"  # "surgery" (value-value maps, forward only) or "relevance" (gradients, per label)
    surgery_blocks: int = 6  # last blocks given the value-value path (capped at the model's depth)
    input_size: int | None = None  # short side of the scale-1 view in pixels; None = the model's training size
    scales: tuple[float, ...] = (1.0, 1.5)  # view scales relative to input_size
    flip: bool = True  # add a horizontally flipped copy of every scale
    window: int | None = None  # crop side for views larger than it (stride half); None = each view whole
    fusion: str = "softmin"  # how views are combined: softmin (smoothed min-pooling), mean or max
    softmin_temperature: float = 0.1  # T of the smoothed minimum, on maps scaled to [0, 1]
    # Views are fused on a grid this many times finer than the finest view's patch grid (at most the image's
    # pixels), then upsampled once: maps are patch-coarse, so fusing at full resolution only costs time.
    fusion_upsampling: int = 4
    background_threshold: float = 0.8  # a pixel is background unless some label's scaled map reaches this
    background_words: tuple[str, ...] = ()  # extra negative labels ("ground", "sky", ...) counted as background
    sharpness: float = 20.0  # label scores x sharpness -> softmax: how peaked the probabilities are
    crf: CrfConfig | None = field(default_factory=CrfConfig)  # dense CRF on the probabilities; None = none
    ignore_threshold: float = 0.9  # pixels whose final probability is below this become 255 (ignore)

    def __post_init__(self) -> None:
        self.scales = tuple(self.scales)
        self.background_words = tuple(self.background_words)
        if isinstance(self.crf, Mapping):
            self.crf = CrfConfig(**self.crf)
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        if self.surgery_blocks < 0:
            raise ConfigError(f"surgery_blocks must be at least 0, got {self.surgery_blocks}")
        for name in ("input_size", "window"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive number of pixels, got {getattr(self, name)}")
        if not self.scales or not all(math.isfinite(s) and s > 0 for s in self.scales):
            raise ConfigError(f"scales must be one or more positive numbers, got {self.scales}")
        if self.fusion_upsampling < 1:
            raise ConfigError(f"fusion_upsampling must be at least 1, got {self.fusion_upsampling}")
        for name in ("softmin_temperature", "sharpness"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("background_threshold", "ignore_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if any(not isinstance(w, str) or not w.strip() for w in self.background_words):
            raise ConfigError(f"background_words must be non-empty texts, got {self.background_words}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples as lists, the CRF as a dict or None."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "LabelerConfig":
        """The inverse of ``to_dict``; unknown keys raise ``ConfigError`` naming them."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown labeler settings: {', '.join(sorted(unknown))}")
        crf = values.get("crf", CrfConfig())
        if isinstance(crf, Mapping):
            unknown = set(crf) - {f.name for f in dataclasses.fields(CrfConfig)}
            if unknown:
                raise ConfigError(f"unknown CRF settings: {', '.join(sorted(unknown))}")
        try:
            return cls(**values)
        except TypeError as error:  # a value of the wrong type, e.g. a string where a number belongs
            raise ConfigError(f"invalid labeler settings: {error}") from None

    def with_overrides(self, **overrides: Any) -> "LabelerConfig":
        """A copy with some fields replaced. ``crf_<field>`` keys set one CRF field (``crf_iterations=5``),
        ``use_crf=False`` drops the CRF and ``use_crf=True`` restores the default one if there was none."""
        crf_fields = {key[len("crf_"):]: value for key, value in overrides.items() if key.startswith("crf_")}
        plain = {key: value for key, value in overrides.items() if not key.startswith("crf_") and key != "use_crf"}
        use_crf = overrides.get("use_crf")
        crf = self.crf
        if use_crf is False:
            crf = None
        elif crf is None and (use_crf or crf_fields):
            crf = CrfConfig()
        if crf is not None and crf_fields:
            unknown = set(crf_fields) - {f.name for f in dataclasses.fields(CrfConfig)}
            if unknown:
                raise ConfigError(f"unknown CRF settings: {', '.join(sorted(unknown))}")
            crf = dataclasses.replace(crf, **crf_fields)
        return dataclasses.replace(self, crf=crf, **plain)
