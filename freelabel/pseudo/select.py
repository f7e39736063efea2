"""The stage before the maps when no labels are given: which classes of a vocabulary an image shows.

One global embedding finds one object and misses the others (an image holds few of the many possible labels,
and they compete in it). So each image is also cut into regions by unsupervised segmentation (scikit-image's
felzenszwalb, at several scales), and every region is classified alone: the image with everything outside the
region painted over, at its own position and scale, as CLIP saw whole scenes in training. A class scores its
highest probability (softmax over the vocabulary with the model's logit scale) over the whole image and all
regions; of the ``top_k`` best scoring at least ``min_score``, a class whose supporting regions lie mostly inside
a better class's is dropped (one object, one label: most wrong labels name an object's colour right and its shape
wrong, from a part of it).

Regions painted in place with a grey fill, at three segmentation scales, rank labels far better than the whole
image alone, patch-level scores from the dense maps, region-pooled dense features or region crops zoomed to the
input size; flipped views add a little more.

Then each chosen label is checked against its own pseudo-mask (``verify``): the labeler segments the image among
the chosen labels and each label's mask region is classified alone, like a region above. A wrong label's mask
covers the object it misnamed from a part of it, and seen whole that object is named right: the label goes, and a
region surely (``relabel_min_score``) another class brings that class in; the masks are made again among the
labels kept (``verify_rounds``). A label whose mask is too small to check stays (another label's mask took its
object this round). Labels are segmented among each other, not each alone against background, and a label stays
on a low score of its own region (``verify_min_score``): a high bar loses recall. Once the check runs, the
one-object rule can cost more recall than it saves precision (it does with the shipped toy CLIP, whose preset turns
it off). How each choice was measured, on toy scenes of stream 7000: docs/results.md ("How the selection was
designed").
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from skimage.segmentation import felzenszwalb

from freelabel.clip.loading import LoadedClip
from freelabel.io.images import check_rgb
from freelabel.pseudo.config import SelectionConfig
from freelabel.pseudo.labeler import Labeler


def find_regions(image: np.ndarray, config: SelectionConfig) -> list[np.ndarray]:
    """Candidate object regions of ``image`` ((H, W, 3) uint8 RGB): felzenszwalb segments at every scale of
    ``config``, found with the image's short side at ``region_size``, kept when their area is within [min_area,
    max_area], duplicates dropped. Returns (h, w) bool masks at that size (``region_view`` brings one to the image).
    """
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
            regions.append(inside)
    return regions


def region_view(image: np.ndarray, region: np.ndarray, fill: Sequence[int]) -> np.ndarray:
    """The square of ``image`` (side = its short side) centred on ``region`` (a bool mask of any size, scaled to the
    image) as far as the image allows, with every pixel outside the region painted ``fill``: (S, S, 3) uint8."""
    height, width = image.shape[:2]
    if region.shape != (height, width):
        region = F.interpolate(torch.from_numpy(region)[None, None].float(), size=(height, width),
                               mode="nearest")[0, 0].bool().numpy()
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


@dataclass
class Selection:
    """An image's selected classes, (name, score) in order, and (V,) float32 scores in [0, 1]: each class's best
    probability over the views and the checked mask regions. dropped: names the views chose and the check against
    the masks removed; added: names the check brought in."""

    labels: list[tuple[str, float]]
    scores: np.ndarray
    dropped: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)


class LabelSelector:
    """Chooses the classes of a vocabulary an image shows (see the module docstring). Set the vocabulary once,
    then score or select image after image."""

    def __init__(self, labeler: Labeler, config: SelectionConfig | None = None):
        """labeler: makes the pseudo-masks the selected labels are checked against (``config.verify_rounds``); its
        CLIP classifies the views."""
        self.clip: LoadedClip = labeler.clip
        self.config = config or SelectionConfig()
        self.labeler = labeler
        self.names: list[str] = []
        self._text: torch.Tensor | None = None

    def set_vocabulary(self, vocabulary: Sequence[str | Sequence[str]]) -> None:
        """vocabulary: class names, or per class its name then synonyms (``read_vocabulary``). A single class warns
        and is scored against the empty prompt (a softmax over one name would be 1.0 for any image)."""
        classes = [(entry,) if isinstance(entry, str) else tuple(entry) for entry in vocabulary]
        if not classes or any(not names for names in classes):
            raise ValueError("the vocabulary needs at least one class, each with a name")
        self.names = [names[0] for names in classes]
        self._text = encode_vocabulary(self.clip, classes)
        if len(classes) == 1:  # a softmax over one name is 1.0 for every view: score it against the empty prompt
            warnings.warn(f"the vocabulary holds one class ({self.names[0]!r}): its score is its probability "
                          "against the empty prompt, and every image may get it; give more classes to choose from",
                          stacklevel=2)
            self._text = torch.cat([self._text, F.normalize(self.clip.encode_labels([""]).float(), dim=-1)])

    @torch.no_grad()
    def classify_views(self, views: Sequence[np.ndarray]) -> np.ndarray:
        """Each view ((S, S, 3) uint8 RGB, e.g. from ``region_view``) classified over the vocabulary, its embedding
        averaged with its mirror image's if ``config.flip``. Returns (N, V) float32 probabilities (softmax with the
        model's logit scale)."""
        if self._text is None:
            raise ValueError("call set_vocabulary(...) first")
        scale = self.clip.model.logit_scale.exp().float()
        probabilities = [np.zeros((0, len(self.names)), np.float32)]
        for start in range(0, len(views), self.config.batch_size):
            batch = views[start:start + self.config.batch_size]
            embeddings = self.clip.encode_images(self.clip.whole_images_to_tensor(batch))
            if self.config.flip:
                mirrored = self.clip.encode_images(self.clip.whole_images_to_tensor([view[:, ::-1] for view in batch]))
                embeddings = F.normalize(embeddings + mirrored, dim=-1)
            # a one-class vocabulary's empty prompt competes, then is set aside
            scores = (scale * embeddings @ self._text.T).softmax(dim=-1)[:, :len(self.names)]
            probabilities.append(scores.float().cpu().numpy())
        return np.concatenate(probabilities)

    def view_probabilities(self, image: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Every view of ``image`` ((H, W, 3) uint8 RGB) classified: the whole image first, then each region alone.
        Returns (1 + R, V) float32 probabilities (softmax over the vocabulary) and the R region masks
        (``find_regions``)."""
        regions = find_regions(image, self.config)
        views = [image, *(region_view(image, region, self.config.fill) for region in regions)]
        return self.classify_views(views), regions

    def select(self, image: np.ndarray) -> Selection:
        """The classes ``image`` shows (``choose_labels``, then ``verify``) and every class's score: its best
        probability over the views and the checked mask regions."""
        probabilities, regions = self.view_probabilities(image)
        chosen = choose_labels(probabilities, regions, self.config.top_k, self.config.min_score,
                               self.config.max_overlap)
        scores, kept = probabilities.max(axis=0), chosen
        if self.config.verify_rounds and chosen:
            kept, checked = self.verify(image, chosen)
            scores = np.maximum(scores, checked)
        return Selection([(self.names[i], float(scores[i])) for i in kept], scores,
                         dropped=[self.names[i] for i in chosen if i not in kept],
                         added=[self.names[i] for i in kept if i not in chosen])

    def verify(self, image: np.ndarray, labels: Sequence[int]) -> tuple[list[int], np.ndarray]:
        """Check ``labels`` (vocabulary indices) against ``image``'s pseudo-masks, ``config.verify_rounds`` times:
        the labeler segments the image among the labels, each label's mask region is classified alone
        (``classify_views`` of its ``region_view``), ``check_labels`` keeps or replaces it, and the next round
        segments among the labels kept. Returns the kept indices and (V,) float32, each class's best probability
        from a checked region (0 where none)."""
        self.labeler.set_image(image)
        best = np.zeros(len(self.names), np.float32)
        labels = list(labels)
        for _ in range(self.config.verify_rounds):
            if not labels:
                break
            mask = self.labeler.segment([self.names[i] for i in labels]).mask
            regions = [mask == k + 1 for k in range(len(labels))]
            checkable = [k for k, region in enumerate(regions) if region.mean() >= self.config.verify_min_area]
            probabilities = np.full((len(labels), len(self.names)), np.nan, np.float32)
            if checkable:
                probabilities[checkable] = self.classify_views(
                    [region_view(image, regions[k], self.config.fill) for k in checkable])
                best = np.maximum(best, probabilities[checkable].max(axis=0))
            labels = check_labels(labels, probabilities, self.config.verify_min_score, self.config.relabel_min_score)
        return labels, best


def choose_labels(probabilities: np.ndarray, regions: Sequence[np.ndarray], top_k: int, min_score: float,
                  max_overlap: float | None) -> list[int]:
    """The selection rule. probabilities: (1 + R, V) per view, the whole image first, then one per region of
    ``regions`` ((h, w) bool masks of one size). A class's score is its best probability over the views; of the
    ``top_k`` best scoring at least ``min_score`` (best first, ties in vocabulary order), a class is dropped when
    its evidence (the union of the regions where it reaches ``min_score``) lies more than ``max_overlap`` inside
    the evidence of a class kept before it (one object, one label; a class seen in the whole image only has none).
    Returns the kept class indices, best first."""
    scores = probabilities.max(axis=0)
    candidates = [i for i in np.argsort(-scores, kind="stable")[:top_k] if scores[i] >= min_score]
    kept, evidence = [], []
    for index in candidates:
        supporting = [region for region, row in zip(regions, probabilities[1:]) if row[index] >= min_score]
        mine = np.any(supporting, axis=0) if supporting else None
        if max_overlap is not None and mine is not None and any(
                other is not None and (mine & other).sum() > max_overlap * mine.sum() for other in evidence):
            continue
        kept.append(int(index))
        evidence.append(mine)
    return kept


def check_labels(labels: Sequence[int], probabilities: np.ndarray, min_score: float,
                 relabel_min_score: float | None) -> list[int]:
    """The verification rule. labels: class indices; probabilities: (K, V), row k label k's mask region classified
    alone, all NaN where the region was too small to check. A label stays when its row gives it at least
    ``min_score``, or when it could not be checked; a row whose best class reaches ``relabel_min_score`` adds that
    class after it (None = never). Returns the kept class indices, each once, in that order."""
    kept: list[int] = []
    for label, row in zip(labels, probabilities):
        if np.isnan(row).all():  # too small to check
            found = [label]
        else:
            found = [label] if row[label] >= min_score else []
            best = int(row.argmax())
            if relabel_min_score is not None and row[best] >= relabel_min_score:
                found.append(best)
        for index in found:
            if index not in kept:
                kept.append(int(index))
    return kept
