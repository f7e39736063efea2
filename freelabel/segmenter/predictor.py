"""The trained segmenter's façade: set an image once, then ask for masks of any labels, or of the labels it
selects itself (as the ``Labeler`` does for pseudo-masks, and SAM's predictor for prompts)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from freelabel.clip.config import ClipConfig
from freelabel.clip.loading import LoadedClip, load_clip
from freelabel.errors import FreelabelError
from freelabel.io.images import check_rgb
from freelabel.segmentation import Segmentation, check_batch, check_labels
from freelabel.pseudo.mask import confident_mask
from freelabel.segmenter.checkpoint import final_round, load_model_weights, read_run
from freelabel.segmenter.config import SegmenterConfig
from freelabel.segmenter.data import resize_short_side
from freelabel.segmenter.factory import create_segmenter
from freelabel.segmenter.modeling import SelectedLabelSegmenter


def run_device(run: Mapping[str, Any], device: str | None = None) -> str:
    """The device a trained run (``read_run``'s content) is loaded on: ``device``; None = the one it was trained on
    when this machine has it, else CPU."""
    if device is not None:
        return device
    trained_on = run["clip"]["device"]
    return "cpu" if trained_on.startswith("cuda") and not torch.cuda.is_available() else trained_on


@dataclass
class _ImageFeatures:
    """One image's encoder output, all a label query needs."""

    coarse: torch.Tensor  # (1, decoder_dim, h, w)
    pixels: torch.Tensor  # (1, pixel_dim, h', w')
    size: tuple[int, int]  # the image's (H, W), the masks' size


class Segmenter:
    """Masks from a trained selected-label segmenter.

    ``set_image`` runs the CLIP tower and the pixel decoder once and caches their features; ``segment(labels)``
    then costs only the label embeddings (cached by the CLIP) and the light heads. With labels, only they and
    background compete (any names, also ones never trained on); without, the model ranks its vocabulary by its
    multi-label head and its top-k compete. ``segment_batch`` does both for several images, encoding them in
    batches; ``set_image`` + ``segment`` are that path on one image.
    """

    def __init__(self, model: SelectedLabelSegmenter, clip: LoadedClip, vocabulary: Sequence[str], input_size: int,
                 top_k: int | None = None, ignore_threshold: float = 0.0):
        """model: a segmenter on ``clip``'s tower. vocabulary: the labels it selects from when none are given.
        input_size: the short side images are resized to (as in training). top_k: how many labels compete at most
        (None: the model's; never more). ignore_threshold: pixels whose probability is below it become 255
        (0 = never)."""
        if top_k is not None and top_k < 1:
            raise FreelabelError(f"top_k must be at least 1, got {top_k}")
        self.model, self.clip = model.eval(), clip
        self.vocabulary = list(vocabulary)
        self.input_size, self.top_k, self.ignore_threshold = input_size, top_k, ignore_threshold
        self._features: _ImageFeatures | None = None  # set_image's image

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | None = None, clip_config: ClipConfig | None = None,
                 vocabulary: Sequence[str] = (), top_k: int | None = None, ignore_threshold: float = 0.0,
                 round_number: int | None = None) -> Segmenter:
        """Load a ``freelabel train`` run folder: its last finished self-training round's segmenter, or round
        ``round_number`` (``final_round``). device: None = the one it was trained on if available, else CPU.
        clip_config: where to find the CLIP weights (its model and tag must be the run's). vocabulary: more labels
        to select from, after the run's training vocabulary. top_k, ignore_threshold: as in ``__init__``."""
        run_dir = final_round(run_dir, round_number)
        run = read_run(run_dir)
        model_name, pretrained = run["clip"]["model"], run["clip"]["pretrained"]
        if clip_config is not None and (clip_config.model, clip_config.pretrained) != (model_name, pretrained):
            raise FreelabelError(f"{run_dir} was trained on {model_name} ({pretrained}), not "
                                 f"{clip_config.model} ({clip_config.pretrained})")
        if device is None and clip_config is not None:
            device = clip_config.device
        device = run_device(run, device)
        config = dataclasses.replace(clip_config or ClipConfig(model=model_name, pretrained=pretrained),
                                     device=device)
        clip = load_clip(config)
        model = create_segmenter(clip, SegmenterConfig.from_dict(run["architecture"]))
        load_model_weights(run_dir, model)
        return cls(model, clip, list(dict.fromkeys([*run["vocabulary"], *vocabulary])), run["train"]["input_size"],
                   top_k, ignore_threshold)

    @property
    def device(self) -> torch.device:
        return self.clip.device

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        """Compute and cache the features of ``image``: (H, W, 3) uint8 RGB."""
        self._features = self._encode([image])[0]

    def prepare_labels(self, labels: Sequence[str]) -> None:
        """Encode ``labels`` and the vocabulary ahead of time in batches (the CLIP caches them)."""
        self.clip.encode_labels([*labels, *self.vocabulary])

    @torch.no_grad()
    def segment(self, labels: Sequence[str] | None = None, top_k: int | None = None) -> Segmentation:
        """Masks for the cached image (see ``Segmentation``).

        labels: the labels that compete with background (None or empty: the top-k of the vocabulary, ranked by
        the multi-label head). top_k: how many labels compete at most (None: ``self.top_k``). The result's ``labels``
        are the competing labels (given ones in their order, selected ones by rank) and ``label_scores`` their
        presence probabilities; ``scores`` are the per-label pixel probabilities.
        """
        if self._features is None:
            raise FreelabelError("call set_image(image) before segment(labels)")
        return self._decode(self._features, check_labels(labels, allow_empty=True), top_k)

    @torch.no_grad()
    def segment_batch(self, images: Sequence[np.ndarray], labels: Sequence[Sequence[str] | None],
                      top_k: int | None = None) -> list[Segmentation]:
        """Masks for several images at once: ``images[i]`` ((H, W, 3) uint8 RGB, sizes may differ) with its own
        ``labels[i]`` (as ``segment``'s: empty or None, the model selects). The same results as ``set_image`` +
        ``segment`` image by image; images that resize to the same input size go through ``model.encode`` as one
        batch, the light heads run per image. The image cached by ``set_image`` is left as it was; nothing of the
        batch stays cached.
        """
        check_batch(images, labels)
        given = [check_labels(image_labels, allow_empty=True) for image_labels in labels]
        return [self._decode(features, image_labels, top_k)
                for features, image_labels in zip(self._encode(images), given)]

    def _encode(self, images: Sequence[np.ndarray]) -> list[_ImageFeatures]:
        """The CLIP tower and the pixel decoder over ``images``, one batch per input size."""
        for image in images:  # all checked before any work
            check_rgb(image)
        sizes = [resize_short_side(image.shape[:2], self.input_size, self.model.input_multiple) for image in images]
        features: list[_ImageFeatures | None] = [None] * len(images)
        for size in dict.fromkeys(sizes):
            members = [i for i, other in enumerate(sizes) if other == size]
            coarse, pixels = self.model.encode(self.clip.images_to_tensor([images[i] for i in members], size=size))
            for j, i in enumerate(members):
                features[i] = _ImageFeatures(coarse[j:j + 1], pixels[j:j + 1], images[i].shape[:2])
        return features

    def _decode(self, features: _ImageFeatures, given: list[str], top_k: int | None) -> Segmentation:
        """``segment(given, top_k)`` on one image's features."""
        candidates = given or self.vocabulary
        if not candidates:
            raise FreelabelError("no labels given and the model has no vocabulary to select from")
        k = min(top_k or self.top_k or self.model.config.top_k, self.model.config.top_k, len(candidates))
        text = self.clip.encode_labels(candidates)
        out = self.model.decode(features.coarse, features.pixels, text, top_k=k)
        order = out.selected[0].tolist()
        logits = out.pixel_logits
        if given:  # back to the caller's order
            rank_of = {candidate: rank for rank, candidate in enumerate(order)}
            keep = [0] + [1 + rank_of[i] for i in range(len(given)) if i in rank_of]
            order = [i for i in range(len(given)) if i in rank_of]
            logits = logits[:, keep]
        logits = F.interpolate(logits, size=features.size, mode="bilinear", align_corners=False)[0]
        probabilities = torch.softmax(logits, dim=0)
        mask = confident_mask(probabilities, self.ignore_threshold)
        presence = torch.sigmoid(out.label_logits[0, order])
        return Segmentation(labels=[candidates[i] for i in order], scores=probabilities[1:].cpu().numpy(),
                            probabilities=probabilities.cpu().numpy(), mask=mask.cpu().numpy(),
                            label_scores=presence.cpu().numpy())
