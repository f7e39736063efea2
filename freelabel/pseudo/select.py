"""The stage before the maps when no labels are given: which classes of a vocabulary an image shows.

One global embedding finds one object and misses the others (an image holds few of the many possible labels,
and they compete in it). So each image is also cut into regions by unsupervised segmentation (scikit-image's
felzenszwalb, at several scales), and every region is classified alone: the image with everything outside the
region painted over, at its own position and scale, as CLIP saw whole scenes in training. A class scores its
highest probability (softmax over the vocabulary with the model's logit scale) over the whole image and all
regions; the ``top_k`` best scoring at least ``min_score`` are selected.

Chosen on toy scenes of stream 7000 (100 scenes, never a measured stream): label mAP 0.65 with the whole image
alone, 0.66 with patch-level scores from the dense maps, 0.60 with region-pooled dense features, 0.50-0.69 with
region crops zoomed to the input size, 0.85 with one segmentation scale painted in place and 0.89-0.91 with
three; a grey fill beat the image's median colour, dilating regions lost. On all 300 scenes of that stream: mAP
0.874 and F1 0.808 without flipped views, 0.879 and 0.825 with them (precision 0.83, recall 0.82 at top 5 and
0.8, the operating point of the toy preset); most wrong labels have the right colour and the wrong shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from skimage.segmentation import felzenszwalb

from freelabel.clip.loading import LoadedClip
from freelabel.errors import ConfigError
from freelabel.io.images import check_rgb


@dataclass
class SelectionConfig:
    """How an image's labels are chosen from a vocabulary; part of a model's preset."""

    region_scales: tuple[float, ...] = (300.0, 800.0, 2000.0)  # felzenszwalb scale per segmentation; larger = bigger
    region_sigma: float = 0.8  # felzenszwalb's Gaussian pre-smoothing, pixels at region_size
    region_min_size: int = 30  # felzenszwalb's smallest region, pixels at region_size
    region_size: int = 64  # regions are found with the image's short side resized to this (px)
    min_area: float = 0.02  # smaller regions (fraction of the image) are not classified
    max_area: float = 0.6  # nor larger ones (the whole image is classified anyway)
    fill: tuple[int, int, int] = (128, 128, 128)  # RGB painted outside a region in its view
    flip: bool = True  # each view's embedding is averaged with its mirror image's
    top_k: int = 5  # at most this many labels per image
    min_score: float = 0.8  # a selected label's score (its best probability over the views) reaches this
    batch_size: int = 32  # views per encoder pass

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

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "region_scales": list(self.region_scales), "fill": list(self.fill)}


def find_regions(image: np.ndarray, config: SelectionConfig) -> list[np.ndarray]:
    """Candidate object regions of ``image`` ((H, W, 3) uint8 RGB): felzenszwalb segments at every scale of
    ``config``, found at ``region_size``, kept when their area is within [min_area, max_area], duplicates dropped.
    Returns (H, W) bool masks."""
    check_rgb(image)
    height, width = image.shape[:2]
    factor = config.region_size / min(height, width)
    small_size = (max(1, round(height * factor)), max(1, round(width * factor)))
    small = F.interpolate(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float(),
                          size=small_size, mode="bilinear", antialias=True, align_corners=False)
    small = small[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    regions, seen = [], set()
    for scale in config.region_scales:
        segments = felzenszwalb(small, scale=scale, sigma=config.region_sigma, min_size=config.region_min_size)
        for index in range(int(segments.max()) + 1):
            inside = segments == index
            if not config.min_area <= inside.mean() <= config.max_area:
                continue
            signature = np.packbits(inside).tobytes()
            if signature in seen:
                continue
            seen.add(signature)
            full = F.interpolate(torch.from_numpy(inside)[None, None].float(), size=(height, width), mode="nearest")
            regions.append(full[0, 0].bool().numpy())
    return regions


def region_view(image: np.ndarray, region: np.ndarray, fill: Sequence[int]) -> np.ndarray:
    """The square of ``image`` (side = its short side) centred on ``region`` as far as the image allows, with
    every pixel outside the region painted ``fill``: (S, S, 3) uint8."""
    height, width = image.shape[:2]
    side = min(height, width)
    ys, xs = np.nonzero(region)
    top = int(np.clip((ys.min() + ys.max()) // 2 - side // 2, 0, height - side))
    left = int(np.clip((xs.min() + xs.max()) // 2 - side // 2, 0, width - side))
    window = (slice(top, top + side), slice(left, left + side))
    return np.where(region[window][..., None], image[window], np.asarray(fill, np.uint8)).astype(np.uint8)


def encode_vocabulary(clip: LoadedClip, vocabulary: Sequence[Sequence[str]]) -> torch.Tensor:
    """Class embeddings of a vocabulary (each class a name and its synonyms, see ``read_vocabulary``): the
    renormalised mean of its names' embeddings, as CLIP-ES does. Returns (V, D) float32 unit rows."""
    names = list(dict.fromkeys(name for names in vocabulary for name in names))
    by_name = dict(zip(names, clip.encode_labels(names)))
    return F.normalize(torch.stack([torch.stack([by_name[n] for n in names]).mean(0) for names in vocabulary]), dim=-1)


class LabelSelector:
    """Chooses the classes of a vocabulary an image shows (see the module docstring). Set the vocabulary once,
    then score or select image after image."""

    def __init__(self, clip: LoadedClip, config: SelectionConfig | None = None):
        self.clip = clip
        self.config = config or SelectionConfig()
        self.names: list[str] = []
        self._text: torch.Tensor | None = None

    def set_vocabulary(self, vocabulary: Sequence[str | Sequence[str]]) -> None:
        """vocabulary: class names, or per class its name then synonyms (``read_vocabulary``)."""
        classes = [(entry,) if isinstance(entry, str) else tuple(entry) for entry in vocabulary]
        if not classes or any(not names for names in classes):
            raise ValueError("the vocabulary needs at least one class, each with a name")
        self.names = [names[0] for names in classes]
        self._text = encode_vocabulary(self.clip, classes)

    @torch.no_grad()
    def scores(self, image: np.ndarray) -> np.ndarray:
        """Per class of the vocabulary, its best probability over the views of ``image`` ((H, W, 3) uint8 RGB):
        the whole image and every region alone. Returns (V,) float32 in [0, 1]."""
        if self._text is None:
            raise ValueError("call set_vocabulary(...) first")
        views = [image, *(region_view(image, region, self.config.fill) for region in find_regions(image, self.config))]
        scale = self.clip.model.logit_scale.exp().float()
        best = torch.zeros(len(self.names), device=self.clip.device)
        for start in range(0, len(views), self.config.batch_size):
            batch = views[start:start + self.config.batch_size]
            embeddings = self.clip.encode_images(self.clip.whole_images_to_tensor(batch))
            if self.config.flip:
                mirrored = self.clip.encode_images(self.clip.whole_images_to_tensor([view[:, ::-1] for view in batch]))
                embeddings = F.normalize(embeddings + mirrored, dim=-1)
            probabilities = (scale * embeddings @ self._text.T).softmax(dim=-1)
            best = torch.maximum(best, probabilities.amax(dim=0))
        return best.cpu().numpy().astype(np.float32)

    def select(self, image: np.ndarray) -> list[tuple[str, float]]:
        """The selected classes of ``image``: (name, score) for the ``top_k`` best scoring at least
        ``min_score``, best first (possibly none)."""
        return select_top(self.names, self.scores(image), self.config.top_k, self.config.min_score)


def select_top(names: Sequence[str], scores: np.ndarray, top_k: int, min_score: float) -> list[tuple[str, float]]:
    """(name, score) of the ``top_k`` highest ``scores`` ((V,) float) that reach ``min_score``, best first; ties
    keep vocabulary order."""
    order = np.argsort(-np.asarray(scores), kind="stable")[:top_k]
    return [(names[i], float(scores[i])) for i in order if scores[i] >= min_score]
