"""The user-facing façade: set an image once, then ask for masks of any labels (as SAM's predictor does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from freelabel.cards import Preset, model_preset
from freelabel.clip.dense import DenseClipEncoder, check_supported
from freelabel.clip.loading import ClipConfig, LoadedClip, load_clip
from freelabel.errors import FreelabelError
from freelabel.io.images import check_rgb
from freelabel.pseudo.config import LabelerConfig
from freelabel.pseudo.crf import refine
from freelabel.pseudo.fusion import fuse
from freelabel.pseudo.maps import relevance_maps, scale_per_label, surgery_similarity
from freelabel.pseudo.mask import background_probabilities, confident_mask
from freelabel.pseudo.views import View, plan_views, view_crops, view_to_image
from freelabel.segmentation import Segmentation


@dataclass
class _ViewFeatures:
    view: View
    crops: torch.Tensor  # (n_crops, 3, h_px, w_px) encoder input (relevance reruns the encoder per query)
    pooled: torch.Tensor | None  # (n_crops, D) unit norm; surgery only
    dense: torch.Tensor | None  # (n_crops, D, h, w) unit norm along D; surgery only


class Labeler:
    """Pseudo-masks from CLIP for any labels.

    ``set_image`` runs the image encoder over every test-time view once and caches the features;
    ``segment(labels)`` then costs only text embeddings (cached too) and light per-pixel work, so many label
    queries cost one image pass. (With ``method="relevance"`` each query needs its own forward and backward
    passes; only the views are cached.)
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
        depth = len(visual.transformer.resblocks)
        self.encoder = DenseClipEncoder(visual, min(self.config.surgery_blocks, depth))
        self._image: torch.Tensor | None = None  # (H, W, 3) uint8 on the device, for the CRF
        self._features: list[_ViewFeatures] = []

    @property
    def device(self) -> torch.device:
        return self.clip.device

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        """Compute and cache the encoder's output for every view of ``image``: (H, W, 3) uint8 RGB."""
        check_rgb(image)
        height, width = image.shape[:2]
        config = self.config
        base = config.input_size or min(self.clip.image_size)
        views = plan_views(height, width, base, config.scales, config.flip, self.encoder.patch_size, config.window)
        tensor = self.clip.images_to_tensor([image], size=(height, width))[0]
        crops = view_crops(tensor, views, self.clip.interpolation)
        self._features = []
        if self.config.method == "relevance":  # gradients depend on the label: keep only the inputs
            self._features = [_ViewFeatures(view, crop, None, None) for view, crop in zip(views, crops)]
        # views whose crops share a size go through the encoder as one batch
        for size in dict.fromkeys(c.shape[-2:] for c in crops) if self.config.method == "surgery" else ():
            members = [i for i, c in enumerate(crops) if c.shape[-2:] == size]
            pooled, dense = self.encoder(torch.cat([crops[i] for i in members]))
            pooled, dense = F.normalize(pooled.float(), dim=-1), F.normalize(dense.float(), dim=1)
            start = 0
            for i in members:
                n = len(crops[i])
                self._features.append(_ViewFeatures(views[i], crops[i], pooled[start:start + n],
                                                    dense[start:start + n]))
                start += n
        self._image = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)

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
        if self._image is None:
            raise FreelabelError("call set_image(image) before segment(labels)")
        labels = list(labels)
        if not labels or any(not isinstance(label, str) or not label.strip() for label in labels):
            raise FreelabelError(f"labels must be non-empty strings, got {labels!r}")
        height, width = self._image.shape[:2]
        finest = max((f.view.size for f in self._features), key=lambda size: size[0] * size[1])
        factor = self.config.fusion_upsampling / self.encoder.patch_size
        grid = (min(height, round(finest[0] * factor)), min(width, round(finest[1] * factor)))
        queries = labels + [w for w in self.config.background_words if w not in labels]
        text = self.clip.encode_labels(queries)
        empty = self.clip.encode_labels([""])[0]
        per_view = []
        for features in self._features:
            if self.config.method == "surgery":
                crop_maps = surgery_similarity(features.dense, features.pooled, text, empty)
            else:
                crop_maps = relevance_maps(self.encoder, features.crops, text)
            per_view.append(scale_per_label(view_to_image(crop_maps, features.view, grid)))
        fused = fuse(torch.stack(per_view), self.config.fusion, self.config.softmin_temperature)
        return F.interpolate(fused[None], size=(height, width), mode="bilinear", align_corners=False)[0]

    def segment(self, labels: Sequence[str]) -> Segmentation:
        """Masks for ``labels`` in the cached image (see ``Segmentation``). Only these labels and background
        compete; a pixel is background unless a label's scaled map reaches ``background_threshold``. Everything
        stays on the labeler's device (the CRF included) until the result is returned as numpy arrays."""
        config = self.config
        maps = self.label_maps(labels)
        scores, negatives = maps[:len(labels)], maps[len(labels):]
        probabilities = background_probabilities(scores, negatives, config.background_threshold, config.sharpness)
        if config.crf is not None:
            probabilities = refine(probabilities[None], self._image[None], config.crf)[0]
        mask = confident_mask(probabilities, config.ignore_threshold)
        return Segmentation(labels=list(labels), scores=scores.cpu().numpy(),
                            probabilities=probabilities.cpu().numpy(), mask=mask.cpu().numpy())
