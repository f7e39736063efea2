"""The settings of the pseudo-mask stages, validated when they are made: ``LabelerConfig`` (maps, views, fusion,
mask) with its refinements ``CrfConfig`` and ``PamrConfig``, and ``SelectionConfig`` (which labels of a vocabulary
an image shows). Free of torch, so that a command that only reads settings starts fast."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from freelabel.config import option
from freelabel.errors import ConfigError

FUSIONS = ("softmin", "mean", "max")
BACKENDS = ("pydensecrf", "torch")


@dataclass
class CrfConfig:
    """Dense CRF parameters (pixel units for ``*_sxy``, 0-255 intensity units for ``bilateral_srgb``).

    The defaults are the library's default preset for real CLIPs: a ViT's maps are patch classifiers, so they were
    chosen on COCO-Object val maps whose 1/16 cells hold only their majority class (``benchmarks/crf_coco.py --tune
    --coarse majority``, 40 points on the even-indexed half); they are not verified on real CLIP maps.
    """

    backend: str = option("pydensecrf", choices=BACKENDS, help="CRF implementation: pydensecrf (exact, CPU) or "
                          "torch (local window, batched, on the labeler's device).")
    # 3, 5 and 10 score alike on COCO; each costs time
    iterations: int = option(3, help="Mean-field iterations.")
    gaussian_sxy: float = option(3.0, help="Spatial std of the smoothness kernel (px).")
    gaussian_compat: float = option(1.0, help="Weight of the smoothness kernel (0 = off).")
    bilateral_sxy: float = option(10.0, help="Spatial std of the appearance kernel (px).")
    bilateral_srgb: float = option(6.0, help="Colour std of the appearance kernel (0-255).")
    bilateral_compat: float = option(3.0, help="Weight of the appearance kernel (0 = off).")
    window: int = option(9, help="torch backend: neighbourhood side on the downsampled grid (odd).")
    downsample: int = option(4, help="torch backend: messages are passed on a grid this many times coarser.")

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown CRF backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.window < 1 or self.window % 2 == 0:
            raise ConfigError(f"CRF window must be a positive odd number, got {self.window}")
        for name in ("iterations", "downsample"):
            if getattr(self, name) < 1:
                raise ConfigError(f"CRF {name} must be at least 1, got {getattr(self, name)}")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"CRF {name} must be positive, got {getattr(self, name)}")
        for name in ("gaussian_compat", "bilateral_compat"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"CRF {name} must be at least 0, got {getattr(self, name)}")


@dataclass
class PamrConfig:
    """PAMR's settings; the defaults are those SCLIP and NACLIP refine their maps with."""

    iterations: int = option(10, help="Times the probabilities are averaged over the neighbours.")
    dilations: tuple[int, ...] = option((8, 16), help="Distances (px) of the 8 neighbours of each ring, e.g. '8,16'.")

    def __post_init__(self) -> None:
        self.dilations = tuple(self.dilations)
        if self.iterations < 1:
            raise ConfigError(f"PAMR iterations must be at least 1, got {self.iterations}")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise ConfigError(f"PAMR dilations must be one or more positive distances, got {self.dilations}")


# the forward-only methods (a variant of the tower's last blocks each, freelabel.pseudo.maps.VARIANTS) and relevance
METHODS = ("surgery", "naclip", "sclip", "clearclip", "relevance")
# the optional nested configs: their fields are set as <name>_<field>, and use_<name> switches them on or off
NESTED = {"crf": CrfConfig, "pamr": PamrConfig}


@dataclass
class LabelerConfig:
    """How label maps are computed, fused and turned into a mask. Saved beside every output.

    The field defaults are the library's default preset (``freelabel.cards``); a model may ship its own.
    """

    method: str = option("surgery", choices=METHODS, help="How label maps are computed: surgery (value-value "
                         "attention over the last surgery_blocks blocks), naclip (key-key attention with a "
                         "neighbourhood prior in the last block), sclip (query-query + key-key), clearclip "
                         "(query-query), all forward only; or relevance (gradients, per label).")
    surgery_blocks: int = option(6, help="surgery: last blocks given the value-value path (capped at the model's "
                                 "depth).")
    gaussian_std: float = option(5.0, help="naclip: std of the neighbourhood prior, in patches.")
    feature_surgery: bool | None = option(None, help="Forward-only methods: subtract what all labels share from "
                                          "each label's map (CLIP Surgery's feature surgery); None = the method's "
                                          "own: on for surgery, off for the others.")
    input_size: int | None = option(None, help="Short side of the scale-1 view in pixels; None = the model's "
                                    "training size.")
    scales: tuple[float, ...] = option((1.0, 1.5), help="View scales relative to input_size, e.g. '1,1.5'.")
    flip: bool = option(True, help="Add a horizontally flipped copy of every scale.")
    window: int | None = option(None, help="Crop side for views larger than it (sliding, stride half); None = each "
                                "view whole.")
    fusion: str = option("softmin", choices=FUSIONS, help="How views are combined: softmin (smoothed min-pooling), "
                         "mean or max.")
    softmin_temperature: float = option(0.1, help="Temperature of the smoothed minimum, on maps scaled to [0, 1].")
    # maps are patch-coarse, so fusing at full resolution only costs time
    fusion_upsampling: int = option(4, help="Views are fused on a grid this many times finer than the finest view's "
                                    "patch grid (at most the image's pixels), then upsampled once.")
    background_threshold: float = option(0.8, help="A pixel is background unless some label's scaled map reaches "
                                         "this.")
    background_words: tuple[str, ...] = option((), help="Extra negative labels counted as background, e.g. "
                                               "'sky,ground'.")
    sharpness: float = option(20.0, help="Label scores x sharpness go through the softmax: how peaked the "
                              "probabilities are.")
    pamr: PamrConfig | None = option(None, help="Refine the probabilities with PAMR (before the CRF, if both); "
                                     "None = no PAMR.")
    crf: CrfConfig | None = option(default_factory=CrfConfig, help="Refine the probabilities with a dense CRF; "
                                   "None = no CRF.")
    ignore_threshold: float = option(0.9, help="Pixels whose final probability is below this become 255 (ignore).")

    def __post_init__(self) -> None:
        self.scales = tuple(self.scales)
        self.background_words = tuple(self.background_words)
        for name, kind in NESTED.items():
            if isinstance(getattr(self, name), Mapping):
                setattr(self, name, kind(**getattr(self, name)))
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
        for name in ("softmin_temperature", "sharpness", "gaussian_std"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("background_threshold", "ignore_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if any(not isinstance(w, str) or not w.strip() for w in self.background_words):
            raise ConfigError(f"background_words must be non-empty texts, got {self.background_words}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples as lists, the CRF and PAMR as dicts or None."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "LabelerConfig":
        """The inverse of ``to_dict``; unknown keys raise ``ConfigError`` naming them."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown labeler settings: {', '.join(sorted(unknown))}")
        for name, kind in NESTED.items():
            nested = values.get(name)
            unknown = set(nested) - {f.name for f in dataclasses.fields(kind)} if isinstance(nested, Mapping) else ()
            if unknown:
                raise ConfigError(f"unknown {name.upper()} settings: {', '.join(sorted(unknown))}")
        try:
            return cls(**values)
        except TypeError as error:  # a value of the wrong type, e.g. a string where a number belongs
            raise ConfigError(f"invalid labeler settings: {error}") from None

    def with_overrides(self, **overrides: Any) -> "LabelerConfig":
        """A copy with some fields replaced. ``crf_<field>`` and ``pamr_<field>`` keys set one field of the CRF or
        PAMR (``crf_iterations=5``), switching it on if it was off; ``use_crf`` / ``use_pamr`` False drops it and
        True restores the default one if there was none."""
        nested = {}
        for name, kind in NESTED.items():
            fields = {key[len(name) + 1:]: value for key, value in overrides.items() if key.startswith(f"{name}_")}
            use = overrides.get(f"use_{name}")
            config = getattr(self, name)
            if use is False:
                config = None
            elif config is None and (use or fields):
                config = kind()
            if config is not None and fields:
                unknown = set(fields) - {f.name for f in dataclasses.fields(kind)}
                if unknown:
                    raise ConfigError(f"unknown {name.upper()} settings: {', '.join(sorted(unknown))}")
                config = dataclasses.replace(config, **fields)
            nested[name] = config
        plain = {key: value for key, value in overrides.items()
                 if not any(key.startswith(f"{name}_") or key == f"use_{name}" for name in NESTED)}
        return dataclasses.replace(self, **plain, **nested)


@dataclass
class SelectionConfig:
    """How an image's labels are chosen from a vocabulary; part of a model's preset."""

    region_scales: tuple[float, ...] = option((300.0, 800.0, 2000.0), help="Felzenszwalb scale per segmentation; "
                                              "larger = bigger regions.")
    region_sigma: float = option(0.8, help="Felzenszwalb's Gaussian pre-smoothing, pixels at region_size.")
    region_min_size: int = option(30, help="Felzenszwalb's smallest region, pixels at region_size.")
    region_size: int = option(64, help="Regions are found with the image's short side resized to this (px).")
    min_area: float = option(0.02, help="Smaller regions (fraction of the image) are not classified.")
    max_area: float = option(0.6, help="Nor larger ones (the whole image is classified anyway).")
    fill: tuple[int, int, int] = option((128, 128, 128), help="RGB painted outside a region in its view.")
    flip: bool = option(True, help="Each view's embedding is averaged with its mirror image's.")
    top_k: int = option(5, help="Label-free: at most this many labels per image.")
    min_score: float = option(0.7, help="Label-free: a selected label's score (its best probability over the views) "
                              "reaches this (0-1).")
    # one object, one label
    max_overlap: float | None = option(0.7, help="Label-free: a label whose evidence (the regions where it reaches "
                                       "min_score) lies more than this fraction inside a better label's evidence is "
                                       "dropped (0-1; 1 or None = never).")
    verify_rounds: int = option(2, help="Label-free: times each selected label is checked against its own "
                                "pseudo-mask (the labeler's, among the selected labels; made anew among the labels "
                                "kept each time; 0 = never): a label stays when its mask region, classified alone "
                                "like a region, gives it at least verify_min_score.")
    verify_min_score: float = option(0.1, help="The score a label's own mask region must give it to stay.")
    relabel_min_score: float | None = option(0.9, help="A mask region classified alone as another class this surely "
                                             "adds that class; None = never.")
    verify_min_area: float = option(0.005, help="A label whose mask is smaller (fraction of the image) cannot be "
                                    "checked: it stays.")
    batch_size: int = option(32, help="Views per encoder pass.")

    def __post_init__(self) -> None:
        self.region_scales = tuple(float(v) for v in self.region_scales)
        self.fill = tuple(int(v) for v in self.fill)
        if any(v <= 0 for v in self.region_scales):
            raise ConfigError(f"region_scales must be positive, got {self.region_scales}")
        if self.region_sigma < 0 or self.region_min_size < 1 or self.region_size < 8:
            raise ConfigError("region_sigma must be >= 0, region_min_size >= 1 and region_size >= 8")
        if not 0 <= self.min_area < self.max_area <= 1:
            raise ConfigError(f"need 0 <= min_area < max_area <= 1, got {self.min_area} and {self.max_area}")
        if len(self.fill) != 3 or not all(0 <= v <= 255 for v in self.fill):
            raise ConfigError(f"fill must be three values in 0..255, got {self.fill}")
        if self.top_k < 1 or self.batch_size < 1:
            raise ConfigError(f"top_k and batch_size must be at least 1, got {self.top_k} and {self.batch_size}")
        if not 0 <= self.min_score <= 1:
            raise ConfigError(f"min_score must be in [0, 1], got {self.min_score}")
        if self.max_overlap is not None and not 0 <= self.max_overlap <= 1:
            raise ConfigError(f"max_overlap must be in [0, 1] or None, got {self.max_overlap}")
        if self.verify_rounds < 0:
            raise ConfigError(f"verify_rounds must be at least 0, got {self.verify_rounds}")
        if not all(0 <= v <= 1 for v in (self.verify_min_score, self.verify_min_area, self.relabel_min_score or 0)):
            raise ConfigError("verify_min_score, relabel_min_score and verify_min_area must be in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "region_scales": list(self.region_scales), "fill": list(self.fill)}
