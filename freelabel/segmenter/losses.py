"""The segmenter's training losses: pixel cross-entropy over the labels it selected, in rank space, and an
asymmetric multi-label loss on the labels it ranks (RankSeg's recipe)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from freelabel.io.masks import IGNORE_INDEX
from freelabel.segmenter.modeling import SegmenterOutput


def asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, gamma_neg: float = 2.0,
                    gamma_pos: float = 0.0, clip: float = 0.05) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al., 2021; RankSeg's multi-label loss): negatives' probabilities are shifted
    down by ``clip`` and focused by ``gamma_neg``, so the many absent labels do not drown the few present ones.

    logits, targets, weights: (B, N) float, targets in {0, 1}, weights 0 for entries that do not count. Returns
    the weighted mean over entries (0 when none counts).
    """
    probability = torch.sigmoid(logits.float())
    shifted = (probability - clip).clamp(min=0)
    positive = targets * torch.log(probability.clamp(min=1e-8)) * (1 - probability).pow(gamma_pos)
    negative = (1 - targets) * torch.log((1 - shifted).clamp(min=1e-8)) * shifted.pow(gamma_neg)
    return -((positive + negative) * weights).sum() / weights.sum().clamp(min=1)


def ranked_targets(mask: torch.Tensor, selected: torch.Tensor, selected_valid: torch.Tensor, num_labels: int
                   ) -> torch.Tensor:
    """Pixel targets in rank space: mask (B, H, W) int64 in 0..num_labels (0 background) or 255; selected,
    selected_valid (B, k). Returns (B, H, W) int64: 0 background, 1 + j for the label ranked j, 255 for ignored
    pixels and pixels whose label is not selected (RankSeg leaves those out of the pixel loss)."""
    b, k = selected.shape
    table = torch.full((b, num_labels + 2), IGNORE_INDEX, dtype=torch.long, device=mask.device)
    table[:, 0] = 0
    ranks = torch.arange(1, k + 1, device=mask.device).expand(b, -1)
    table.scatter_(1, 1 + selected, torch.where(selected_valid, ranks, IGNORE_INDEX))
    index = torch.where(mask == IGNORE_INDEX, num_labels + 1, mask).flatten(1)
    return table.gather(1, index).view_as(mask)


def present_labels(mask: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(B, num_labels) float: 1 where a label (1..num_labels in the (B, H, W) mask) covers any pixel."""
    index = torch.where(mask == IGNORE_INDEX, 0, mask).flatten(1)
    present = torch.zeros(mask.shape[0], num_labels + 1, device=mask.device).scatter_(1, index, 1.0)
    return present[:, 1:]


def segmenter_loss(out: SegmenterOutput, mask: torch.Tensor, given: torch.Tensor, usable: torch.Tensor,
                   num_labels: int, multilabel_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Pixel cross-entropy over background and the selected labels (upsampled logits, 255 ignored) plus the
    weighted asymmetric multi-label loss on images that ranked the whole vocabulary. mask: (B, H, W) int64;
    given, usable: (B,) bool. Returns the loss and its parts as floats."""
    targets = ranked_targets(mask, out.selected, out.selected_valid, num_labels)
    targets[~usable] = IGNORE_INDEX
    logits = F.interpolate(out.pixel_logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
    if (targets != IGNORE_INDEX).any():
        pixel = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    else:  # keeps every parameter in the graph (DistributedDataParallel needs that)
        pixel = logits.sum() * 0
    weights = ((~given) & usable).float()[:, None].expand_as(out.label_logits)
    multilabel = asymmetric_loss(out.label_logits, present_labels(mask, num_labels), weights)
    return pixel + multilabel_weight * multilabel, {"pixel": pixel.item(), "multilabel": multilabel.item()}
