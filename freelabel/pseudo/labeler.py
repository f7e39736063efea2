"""The user-facing façade: set an image once, then ask for masks of any labels (as SAM's predictor does), or
segment a batch of images at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from freelabel.cards import Preset, model_preset
from freelabel.clip.dense import DenseClipEncoder, check_supported
from freelabel.clip.config import ClipConfig
from freelabel.clip.loading import LoadedClip, load_clip
from freelabel.errors import FreelabelError
from freelabel.io.images import check_rgb
from freelabel.pseudo.config import LabelerConfig
from freelabel.pseudo.crf import refine
from freelabel.pseudo.fusion import fuse
from freelabel.pseudo.maps import cosine_similarity, dense_path, relevance_maps, scale_per_label, surgery_similarity
from freelabel.pseudo.mask import background_probabilities, confident_mask
from freelabel.pseudo.pamr import pamr
from freelabel.pseudo.views import View, plan_views, view_crops, view_to_image
from freelabel.segmentation import Segmentation, check_batch, check_labels


@dataclass
class _ViewFeatures:
    view: View
    crops: torch.Tensor  # (n_crops, 3, h_px, w_px) encoder input (relevance reruns the encoder per query)
    pooled: torch.Tensor | None  # (n_crops, D) unit norm; forward-only methods
    dense: torch.Tensor | None  # (n_crops, D, h, w) unit norm along D; forward-only methods


@dataclass
class _ImageFeatures:
    """What a label query needs of one image: its views' encoder output and the pixels, for PAMR and the CRF."""

    image: torch.Tensor  # (H, W, 3) uint8 on the labeler's device
    views: list[_ViewFeatures]  # in plan_views order


class Labeler:
    """Pseudo-masks from CLIP for any labels.

    ``set_image`` runs the image encoder over every test-time view once and caches the features;
    ``segment(labels)`` then costs only text embeddings (cached too) and light per-pixel work, so many label
    queries cost one image pass. (With ``method="relevance"`` each query needs its own forward and backward
    passes; only the views are cached.) ``segment_batch`` does both for several images at once, batched across
    them; ``set_image`` + ``segment`` are that path on one image.
    """

    def __init__(self, model: str | LoadedClip = "ViT-B-16", pretrained: str | None = None, device: str = "cpu",
                 config: LabelerConfig | None = None, clip_config: ClipConfig | None = None):
        """model: a model name (see ``load_clip``) or a loaded CLIP. config: the settings; None = the model's
        preset (``freelabel.cards.model_preset``), kept in ``self.preset``."""
        if isinstance(model, LoadedClip):
            self.clip = model
        else:
            self.clip = load_clip(clip_config or ClipConfig(model=model, pretrained=pretrained, device=device))
        self.preset: Preset | None = None if config is not None else model_preset(self.clip.name)
        self.config = config if config is not None else self.preset.labeler
        visual = check_supported(self.clip.model.visual)
        config = self.config
        self.encoder = DenseClipEncoder(visual, *dense_path(config.method, config.surgery_blocks, config.gaussian_std,
                                                            len(visual.transformer.resblocks)))
        self._cached: _ImageFeatures | None = None  # set_image's image

    @property
    def device(self) -> torch.device:
        return self.clip.device

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        """Compute and cache the encoder's output for every view of ``image``: (H, W, 3) uint8 RGB."""
        self._cached = self._encode([image])[0]

    def prepare_labels(self, labels: Sequence[str]) -> None:
        """Encode ``labels`` (e.g. a dataset's whole vocabulary), the background words and the empty prompt
        ahead of time in batches, so that later ``segment`` calls need no text-tower pass."""
        self.clip.encode_labels([*labels, *self.config.background_words, ""])

    @torch.no_grad()
    def label_maps(self, labels: Sequence[str]) -> torch.Tensor:
        """Fused per-label maps for the cached image: (K, H, W) float32 in [0, 1], one per label in order.

        Each view's map is scaled to [0, 1] per label before fusion, so views and labels are comparable.
        Background words, if configured, compete in feature surgery and are returned after the labels.
        """
        return self._same_size_maps([self._require_image()], [check_labels(labels)])[0]

    @torch.no_grad()
    def segment(self, labels: Sequence[str]) -> Segmentation:
        """Masks for ``labels`` in the cached image (see ``Segmentation``). Only these labels and background
        compete; a pixel is background unless a label's scaled map reaches ``background_threshold``. Everything
        stays on the labeler's device (the CRF included) until the result is returned as numpy arrays."""
        return self._segment([self._require_image()], [check_labels(labels)])[0]

    @torch.no_grad()
    def segment_batch(self, images: Sequence[np.ndarray], labels: Sequence[Sequence[str]]) -> list[Segmentation]:
        """Masks for several images at once: ``images[i]`` ((H, W, 3) uint8 RGB, sizes may differ) with its own
        ``labels[i]`` (non-empty: the labeler cannot select labels itself). The same results as ``set_image``
        + ``segment`` image by image, with the work batched across images: the views of all images go through
        the encoder together, one call per crop size; the maps, fusion, probabilities and the ``torch`` CRF run
        once per group of same-size images (the ``pydensecrf`` CRF runs image by image on the CPU; with
        ``method="relevance"`` the encoder runs per image and label). The image cached by ``set_image`` is left
        as it was; nothing of the batch stays cached.
        """
        check_batch(images, labels)
        labels = [check_labels(image_labels) for image_labels in labels]
        return self._segment(self._encode(images), labels)

    def _require_image(self) -> _ImageFeatures:
        if self._cached is None:
            raise FreelabelError("call set_image(image) before segment(labels)")
        return self._cached

    def _encode(self, images: Sequence[np.ndarray]) -> list[_ImageFeatures]:
        """Every view of every image through the encoder: crops of one size, whichever image and view they come
        from, go through as one batch."""
        for image in images:  # all checked before any work
            check_rgb(image)
        config = self.config
        base = config.input_size or min(self.clip.image_size)
        plans = []  # per image: its views and their crops
        for image in images:
            height, width = image.shape[:2]
            views = plan_views(height, width, base, config.scales, config.flip, self.encoder.patch_size,
                               config.window)
            tensor = self.clip.images_to_tensor([image], size=(height, width))[0]
            plans.append((views, view_crops(tensor, views, self.clip.interpolation)))
        encoded: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (image, view) -> pooled, dense
        if config.method != "relevance":  # relevance's maps depend on the label: only the crops are kept
            crops = [(i, v, crop) for i, (_, image_crops) in enumerate(plans) for v, crop in enumerate(image_crops)]
            for size in dict.fromkeys(crop.shape[-2:] for _, _, crop in crops):
                members = [(i, v, crop) for i, v, crop in crops if crop.shape[-2:] == size]
                pooled, dense = self.encoder(torch.cat([crop for _, _, crop in members]))
                pooled, dense = F.normalize(pooled.float(), dim=-1), F.normalize(dense.float(), dim=1)
                start = 0
                for i, v, crop in members:
                    encoded[i, v] = pooled[start:start + len(crop)], dense[start:start + len(crop)]
                    start += len(crop)
        return [_ImageFeatures(torch.from_numpy(np.ascontiguousarray(image)).to(self.device),
                               [_ViewFeatures(view, crop, *encoded.get((i, v), (None, None)))
                                for v, (view, crop) in enumerate(zip(*plans[i]))])
                for i, image in enumerate(images)]

    def _same_size_maps(self, images: list[_ImageFeatures], labels: list[list[str]]) -> list[torch.Tensor]:
        """``label_maps`` for images of one size, each with its own labels: per image (Q_i, H, W) float32, its
        labels' maps then its background words'.

        The maps of all images are stacked along the label axis, so that mapping views back, scaling, fusing
        and upsampling (all per label) run once for the group.
        """
        height, width = images[0].image.shape[:2]
        finest = max((f.view.size for f in images[0].views), key=lambda size: size[0] * size[1])
        factor = self.config.fusion_upsampling / self.encoder.patch_size
        grid = (min(height, round(finest[0] * factor)), min(width, round(finest[1] * factor)))
        queries = [image_labels + [w for w in self.config.background_words if w not in image_labels]
                   for image_labels in labels]
        texts = [self.clip.encode_labels(image_queries) for image_queries in queries]
        empty = self.clip.encode_labels([""])[0]
        method = self.config.method
        feature_surgery = method == "surgery" if self.config.feature_surgery is None else self.config.feature_surgery
        per_view = []
        for v, view in enumerate(f.view for f in images[0].views):  # same-size images share their views
            crop_maps = []
            for image, text in zip(images, texts):
                features = image.views[v]
                if method == "relevance":
                    crop_maps.append(relevance_maps(self.encoder, features.crops, text))
                elif feature_surgery:
                    crop_maps.append(surgery_similarity(features.dense, features.pooled, text, empty))
                else:
                    crop_maps.append(cosine_similarity(features.dense, text))
            per_view.append(scale_per_label(view_to_image(torch.cat(crop_maps, dim=1), view, grid)))
        fused = fuse(torch.stack(per_view), self.config.fusion, self.config.softmin_temperature)
        maps = F.interpolate(fused[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        return list(maps.split([len(image_queries) for image_queries in queries]))

    def _segment(self, images: list[_ImageFeatures], labels: list[list[str]]) -> list[Segmentation]:
        """``segment`` for each image with its labels, batched over the images of each size."""
        config = self.config
        results: list[Segmentation | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(tuple(image.image.shape), []).append(i)
        for members in groups.values():
            maps = self._same_size_maps([images[i] for i in members], [labels[i] for i in members])
            scores = [image_maps[:len(labels[i])] for i, image_maps in zip(members, maps)]
            probabilities = [background_probabilities(image_scores, image_maps[len(labels[i]):],
                                                      config.background_threshold, config.sharpness)
                             for i, image_scores, image_maps in zip(members, scores, maps)]
            if config.pamr is not None or config.crf is not None:
                probabilities = self._refine(probabilities, [images[i].image for i in members])
            for i, image_scores, image_probabilities in zip(members, scores, probabilities):
                mask = confident_mask(image_probabilities, config.ignore_threshold)
                results[i] = Segmentation(labels=list(labels[i]), scores=image_scores.cpu().numpy(),
                                          probabilities=image_probabilities.cpu().numpy(), mask=mask.cpu().numpy())
        return results

    def _refine(self, probabilities: list[torch.Tensor], images: list[torch.Tensor]) -> list[torch.Tensor]:
        """PAMR, then the CRF, each on same-size images in one call: per image (K_i + 1, H, W) probabilities and
        (H, W, 3) uint8 pixels. Images with fewer labels are padded with classes both keep at 0."""
        classes = [len(p) for p in probabilities]
        padded = probabilities[0].new_zeros((len(probabilities), max(classes), *probabilities[0].shape[1:]))
        valid = torch.zeros(padded.shape[:2], dtype=torch.bool, device=padded.device)
        for i, p in enumerate(probabilities):
            padded[i, :len(p)], valid[i, :len(p)] = p, True
        pixels = torch.stack(images)
        if self.config.pamr is not None:
            padded = pamr(padded, pixels, self.config.pamr)
        if self.config.crf is not None:
            padded = refine(padded, pixels, self.config.crf, valid)
        return [r[:n] for r, n in zip(padded, classes)]
