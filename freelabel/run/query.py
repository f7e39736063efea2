"""Free-text queries on one image: a mask per text, every text answered from the image's cached features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from freelabel.io.masks import IGNORE_INDEX
from freelabel.segmentation import ImageSegmenter


@dataclass
class QueryResult:
    """One text's answer. mask: (H, W) uint8, 1 = the text, 0 = not, 255 = not confident. probability: (H, W)
    float32 in [0, 1], the text's per-pixel probability. area: fraction of the image in the mask. mean_score: mean
    probability inside the mask (0 when empty). error: why the text could not be queried (then mask and
    probability are None)."""

    text: str
    mask: np.ndarray | None
    probability: np.ndarray | None
    area: float = 0.0
    mean_score: float = 0.0
    error: str | None = None


def query(model: ImageSegmenter, image: np.ndarray, texts: Sequence[str]) -> list[QueryResult]:
    """Masks for free ``texts`` in ``image`` ((H, W, 3) uint8 RGB): one image pass (``set_image``), then each
    text segmented alone against background (with the ``Labeler``, a single label's shared component is the
    empty prompt's). An empty text is that query's error, never the others'. Returns one result per text, in order.
    """
    model.set_image(image)
    cleaned = [text.strip() for text in texts]
    model.prepare_labels([text for text in dict.fromkeys(cleaned) if text])
    results = []
    for text in cleaned:
        if not text:
            results.append(QueryResult(text, None, None, error="empty query"))
            continue
        segmentation = model.segment([text])
        mask = np.where(segmentation.mask == IGNORE_INDEX, IGNORE_INDEX, segmentation.mask == 1).astype(np.uint8)
        probability = segmentation.probabilities[1].astype(np.float32)
        inside = mask == 1
        results.append(QueryResult(text, mask, probability, round(float(inside.mean()), 5),
                                   round(float(probability[inside].mean()) if inside.any() else 0.0, 5)))
    return results
