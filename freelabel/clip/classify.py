"""Image-level labels from CLIP: which labels of a vocabulary an image shows."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from freelabel.clip.loading import LoadedClip


@torch.no_grad()
def label_similarities(clip: LoadedClip, images: np.ndarray | Sequence[np.ndarray], labels: Sequence[str],
                       batch_size: int = 64) -> np.ndarray:
    """Cosine similarity of each image with each label's prompt ensemble.

    images: (N, H, W, 3) uint8 RGB, or a list of (H, W, 3) uint8 (sizes may differ); each is brought to the
    model's input as open_clip's eval transform does for it (``clip.resize_mode``: centre crop, squash or pad).
    labels: K free-text labels.
    Returns (N, K) float32 in [-1, 1], column k for ``labels[k]``.
    """
    if len(labels) == 0:
        raise ValueError("need at least one label")
    text = clip.encode_labels(list(labels))
    similarities = []
    for start in range(0, len(images), batch_size):
        embeddings = clip.encode_images(clip.whole_images_to_tensor(images[start:start + batch_size]))
        similarities.append((embeddings @ text.T).cpu().numpy())
    return np.concatenate(similarities).astype(np.float32)
