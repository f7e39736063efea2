"""The selected-label segmenter: RankSeg's head on a CLIP image tower, as pure ``nn.Module``s.

Data flow: image -> CLIP tower (dense surgery embeddings + tokens of a few blocks) -> ``PixelDecoder`` (coarse
features at the patch grid, pixel features at 1/4) -> ``MultiLabelHead`` (one score per candidate label) -> top-k
labels by score -> ``RankedPixelHead`` (cosine of pixel and label embeddings, rank-adaptive normalisation).

Open vocabulary: a label is represented only by its CLIP text embedding, through learned projections shared by all
labels, so a name never seen in training is embedded and ranked the same way. Only background has its own vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from freelabel.clip.dense import DenseClipEncoder
from freelabel.segmenter.config import SegmenterConfig

# logit given to labels outside the selection (and to padding): far below any selected logit, finite in bf16
UNSELECTED_LOGIT = -1e4


def _conv_block(in_dim: int, out_dim: int) -> nn.Sequential:
    """3x3 conv, GroupNorm, GELU: the decoder's unit (GroupNorm: batch statistics are unreliable at batch 1-8)."""
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, 3, padding=1, bias=False), nn.GroupNorm(8, out_dim), nn.GELU())


class PixelDecoder(nn.Module):
    """Fuses the tower's features at the patch grid and lifts them to 1/4 of the input resolution.

    Each input map is projected by a 1x1 conv and summed (coarse features); these are upsampled to 1/4,
    concatenated with a small convolutional stem over the image itself (edges the patch grid cannot resolve)
    and refined by two conv blocks (pixel features).
    """

    def __init__(self, in_dims: list[int], dim: int, pixel_dim: int, stem_dim: int):
        super().__init__()
        self.projections = nn.ModuleList(nn.Conv2d(d, dim, 1) for d in in_dims)
        self.coarse = _conv_block(dim, dim)
        self.stem = nn.Sequential(_conv_block(3, stem_dim), nn.AvgPool2d(2), _conv_block(stem_dim, stem_dim),
                                  nn.AvgPool2d(2)) if stem_dim else None
        self.refine = nn.Sequential(_conv_block(dim + stem_dim, pixel_dim), _conv_block(pixel_dim, pixel_dim))

    def forward(self, features: list[torch.Tensor], images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features: (B, C_i, h, w) maps at the patch grid; images: (B, 3, H, W) normalised, H and W multiples
        of 4. Returns coarse (B, dim, h, w) and pixel (B, pixel_dim, H/4, W/4) features."""
        coarse = self.coarse(sum(proj(f.float()) for proj, f in zip(self.projections, features)))
        size = (images.shape[-2] // 4, images.shape[-1] // 4)
        fine = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        if self.stem is not None:
            fine = torch.cat([fine, self.stem(images)], dim=1)
        return coarse, self.refine(fine)


class MultiLabelHead(nn.Module):
    """One presence score per candidate label (RankSeg's multi-label branch).

    The coarse features are pooled to a ``grid`` x ``grid`` set of tokens and concatenated with one token per
    candidate (a projection of its text embedding); one transformer block mixes them and a shared linear layer reads
    each candidate's token out as a logit.
    """

    def __init__(self, dim: int, text_dim: int, heads: int, grid: int):
        super().__init__()
        self.grid = grid
        self.label_tokens = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.block = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu",
                                                batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 1)

    def forward(self, coarse: torch.Tensor, text: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """coarse: (B, dim, h, w). text: (B, N, text_dim) unit-norm label embeddings. valid: (B, N) bool, False
        for padding. Returns (B, N) float32 logits; padding gets ``UNSELECTED_LOGIT``."""
        patches = F.adaptive_avg_pool2d(coarse, self.grid).flatten(2).transpose(1, 2)
        tokens = torch.cat([patches, self.label_tokens(text)], dim=1)
        padding = torch.cat([torch.zeros(patches.shape[:2], dtype=torch.bool, device=valid.device), ~valid], dim=1)
        out = self.block(tokens, src_key_padding_mask=padding)[:, patches.shape[1]:]
        logits = self.score(self.norm(out)).squeeze(-1).float()
        return logits.masked_fill(~valid, UNSELECTED_LOGIT)


class RankNorm(nn.Module):
    """RankSeg's rank-adaptive temperatures: per pixel, the logits of background and the selected labels in rank
    order are normalised over the valid positions (LayerNorm over the label axis), then scaled and shifted by a
    weight and bias per rank position (initialised 1 and 0). With all positions valid this is ``LayerNorm(k + 1)``
    over the label axis; padding positions do not enter the statistics."""

    def __init__(self, positions: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(positions))
        self.bias = nn.Parameter(torch.zeros(positions))

    def forward(self, logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """logits: (B, P, H, W) float; valid: (B, P) bool, P <= positions. Returns (B, P, H, W), padding positions
        set to ``UNSELECTED_LOGIT``."""
        positions = logits.shape[1]
        weight = valid[:, :, None, None].to(logits.dtype)
        count = weight.sum(1, keepdim=True)
        mean = (logits * weight).sum(1, keepdim=True) / count
        var = ((logits - mean).square() * weight).sum(1, keepdim=True) / count
        normed = (logits - mean) * torch.rsqrt(var + self.eps)
        out = normed * self.weight[:positions, None, None] + self.bias[:positions, None, None]
        return out.masked_fill(~valid[:, :, None, None], UNSELECTED_LOGIT)


class RankedPixelHead(nn.Module):
    """Pixel logits over background and the selected labels: cosine similarity of projected pixel features and
    projected label embeddings, then ``RankNorm`` (or, without it, one learned temperature)."""

    def __init__(self, pixel_dim: int, text_dim: int, embed_dim: int, top_k: int, rank_norm: bool):
        super().__init__()
        self.pixel_embed = nn.Conv2d(pixel_dim, embed_dim, 1)
        self.label_embed = nn.Sequential(nn.Linear(text_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim))
        self.background = nn.Parameter(torch.randn(embed_dim) * embed_dim ** -0.5)
        self.rank_norm = RankNorm(top_k + 1) if rank_norm else None
        # without rank norm: cosines in [-1, 1] need a temperature (CLIP's initial 1/0.07)
        self.log_temperature = None if rank_norm else nn.Parameter(torch.tensor(float(torch.log(torch.tensor(14.3)))))

    def forward(self, pixels: torch.Tensor, text: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """pixels: (B, pixel_dim, H, W). text: (B, k, text_dim) the selected labels' unit-norm embeddings in rank
        order; valid: (B, k) bool. Returns (B, 1 + k, H, W) float32 logits, background first."""
        pixel = F.normalize(self.pixel_embed(pixels).float(), dim=1)
        labels = self.label_embed(text).float()
        labels = torch.cat([self.background.float().expand(labels.shape[0], 1, -1), labels], dim=1)
        with torch.autocast(pixel.device.type, enabled=False):  # cosines near 1 need float32 (bf16 keeps ~3 digits)
            cosine = torch.einsum("bke,behw->bkhw", F.normalize(labels, dim=-1), pixel)
        valid = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        if self.rank_norm is not None:
            return self.rank_norm(cosine, valid)
        return (cosine * self.log_temperature.exp()).masked_fill(~valid[:, :, None, None], UNSELECTED_LOGIT)


@dataclass
class SegmenterOutput:
    """What ``SelectedLabelSegmenter.decode`` returns.

    label_logits: (B, N) float32 presence logits of every candidate (padding: ``UNSELECTED_LOGIT``).
    selected: (B, k) int64 candidate indices in rank order (highest score first). selected_valid: (B, k) bool,
    False where an image had fewer than k candidates. pixel_logits: (B, 1 + k, H/4, W/4) float32 over
    [background, *selected], padding ``UNSELECTED_LOGIT``.
    """

    label_logits: torch.Tensor
    selected: torch.Tensor
    selected_valid: torch.Tensor
    pixel_logits: torch.Tensor


def select_top_k(label_logits: torch.Tensor, valid: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest-scoring valid candidates per image, batched: label_logits (B, N) float, valid (B, N)
    bool. Returns indices (B, min(k, N)) int64 in rank order and their validity (B, min(k, N)) bool."""
    k = min(k, label_logits.shape[1])
    indices = label_logits.masked_fill(~valid, float("-inf")).topk(k, dim=1).indices
    return indices, valid.gather(1, indices)


def gather_labels(text: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows of ``text`` (B, N, D) picked per image by ``indices`` (B, k) int64: (B, k, D). (RankSeg's own gather
    indexes a flattened batch-1 tensor; this one works at any batch size.)"""
    return text.gather(1, indices[:, :, None].expand(-1, -1, text.shape[-1]))


class SelectedLabelSegmenter(nn.Module):
    """RankSeg-style segmenter on a CLIP image tower: selects the top-k candidate labels of an image by a
    multi-label head, then classifies pixels among background and those labels only.

    ``encode`` runs the image tower and the decoder once (cacheable); ``decode`` answers for any candidate labels,
    given as CLIP text embeddings.
    """

    def __init__(self, encoder: DenseClipEncoder, text_dim: int, config: SegmenterConfig):
        super().__init__()
        self.config = config
        self.encoder = encoder
        depth = len(encoder.visual.transformer.resblocks)
        # evenly spaced blocks ending with the last, e.g. 12 blocks, 4 taken -> 2, 5, 8, 11
        self.feature_blocks = sorted({depth - 1 - i * depth // config.feature_blocks
                                      for i in range(min(config.feature_blocks, depth))})
        width = encoder.visual.transformer.width
        self.decoder = PixelDecoder([text_dim] + [width] * len(self.feature_blocks), config.decoder_dim,
                                    config.pixel_dim, config.stem_dim)
        self.label_head = MultiLabelHead(config.decoder_dim, text_dim, config.heads, config.multilabel_grid)
        self.pixel_head = RankedPixelHead(config.pixel_dim, text_dim, config.embed_dim, config.top_k,
                                          config.rank_norm)

    @property
    def input_multiple(self) -> int:
        """Input sides must be multiples of this (the patch size and the decoder's 1/4)."""
        return math.lcm(self.encoder.patch_size, 4)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: (B, 3, H, W) normalised, sides multiples of ``input_multiple``. Returns coarse (B, decoder_dim,
        H/p, W/p) and pixel (B, pixel_dim, H/4, W/4) features."""
        _, dense, intermediates = self.encoder.features(images, self.feature_blocks)
        return self.decoder([dense, *intermediates], images)

    def decode(self, coarse: torch.Tensor, pixels: torch.Tensor, text: torch.Tensor, valid: torch.Tensor | None = None,
               top_k: int | None = None) -> SegmenterOutput:
        """Scores the candidates and classifies pixels among background and the top ``top_k`` of them.

        coarse, pixels: ``encode``'s output. text: (N, D) or (B, N, D) unit-norm CLIP text embeddings of the
        candidate labels. valid: (B, N) bool (None: all valid). top_k: None = the config's ``top_k``; at most the
        config's (the rank positions that were trained). See ``SegmenterOutput``.
        """
        b = coarse.shape[0]
        text = text.to(coarse.dtype)
        text = text.expand(b, -1, -1) if text.dim() == 2 else text
        valid = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device) if valid is None else valid
        k = self.config.top_k if top_k is None else top_k
        if not 1 <= k <= self.config.top_k:
            raise ValueError(f"top_k must be in [1, {self.config.top_k}] for this model, got {k}")
        label_logits = self.label_head(coarse, text, valid)
        selected, selected_valid = select_top_k(label_logits.detach(), valid, k)
        pixel_logits = self.pixel_head(pixels, gather_labels(text, selected), selected_valid)
        return SegmenterOutput(label_logits, selected, selected_valid, pixel_logits)

    def forward(self, images: torch.Tensor, text: torch.Tensor, valid: torch.Tensor | None = None,
                top_k: int | None = None) -> SegmenterOutput:
        """``decode(*encode(images), text, valid, top_k)``."""
        return self.decode(*self.encode(images), text, valid, top_k)
