"""Dense CLIP features over open_clip's own ViT weights: per-patch embeddings from a second path through the last
blocks, whose attention (value-value, key-key, query-query, ...) is a named variant of the tower's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from freelabel.errors import FreelabelError


class UnsupportedModelError(FreelabelError):
    """The model's image tower is not an open_clip ViT that dense maps can be computed for."""


def check_supported(visual: nn.Module) -> VisionTransformer:
    """Return ``visual`` if dense maps can be computed for it, else raise ``UnsupportedModelError``."""
    if not isinstance(visual, VisionTransformer):
        raise UnsupportedModelError(
            f"dense maps need an open_clip ViT image tower; this model's is {type(visual).__name__} (ResNet, ConvNeXt "
            "and timm towers are not supported). Use a ViT model such as ViT-B-16.")
    if visual.attn_pool is not None or not all(type(b) is ResidualAttentionBlock for b in visual.transformer.resblocks):
        raise UnsupportedModelError("dense maps support open_clip ViTs with standard attention blocks and token or "
                                    "average pooling; this one uses attentional pooling or custom blocks.")
    return visual


# Which token projections meet in the attention logits: "qk" is the tower's own softmax(q k^T / sqrt(d)); "vv"
# CLIP Surgery's, "kk" NACLIP's, "qq" ClearCLIP's; "qq+kk" SCLIP's sum of two attention matrices.
ATTENTIONS = ("qk", "vv", "qq", "kk", "qq+kk")


@dataclass(frozen=True)
class LastBlock:
    """How the dense path's blocks differ from the tower's own.

    attention: one of ``ATTENTIONS``; every term is softmax(a b^T / sqrt(head width) + prior) per head, and the
    terms' matrices are summed before they weight the values. residual: the path starts from the tokens entering
    its first block (True) or from zero, so it holds only the attention outputs (False). ffn: each block's MLP is
    applied on the path too. gaussian_std: a neighbourhood prior on the patch grid (NACLIP), added to the logits:
    exp(-|p_i - p_j|^2 / (2 std^2)) between patches i and j at grid positions p (std in patches), 0 to and from
    the class token; None = no prior. ``LastBlock("qk", residual=True, ffn=True)`` is the tower's own block.
    """

    attention: str = "vv"
    residual: bool = True
    ffn: bool = False
    gaussian_std: float | None = None

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r}; choose one of {', '.join(ATTENTIONS)}")
        if self.gaussian_std is not None and not self.gaussian_std > 0:
            raise ValueError(f"gaussian_std must be positive or None, got {self.gaussian_std}")


def neighbourhood_prior(grid: tuple[int, int], std: float, device: torch.device | str | None = None) -> torch.Tensor:
    """NACLIP's Gaussian neighbourhood prior for a class token followed by an (h, w) grid of patches in row-major
    order: (1 + h*w, 1 + h*w) float32, exp(-|p_i - p_j|^2 / (2 std^2)) in (0, 1] between patches, 0 in the class
    token's row and column."""
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    positions = torch.stack([ys.flatten(), xs.flatten()], dim=1).float()
    prior = torch.zeros(1 + h * w, 1 + h * w, device=device)
    prior[1:, 1:] = torch.exp(-torch.cdist(positions, positions).pow(2) / (2 * std ** 2))
    return prior


def variant_attention(block: ResidualAttentionBlock, x: torch.Tensor, attention: str,
                      prior: torch.Tensor | None = None) -> torch.Tensor:
    """The attention of ``block`` with its logits formed as ``attention`` says (see ``LastBlock``), its output
    projection included. x: (B, N, width), the block's normalised input (``block.ln_1``); prior: (N, N) added to
    every term's logits, or None. Returns (B, N, width) in x's dtype."""
    attn = block.attn
    width, heads = attn.embed_dim, attn.num_heads
    b, n, _ = x.shape
    terms = attention.split("+")
    tokens = {}
    for name in sorted(set("".join(terms)) | {"v"}):  # only the projections the terms use
        rows = slice("qkv".index(name) * width, ("qkv".index(name) + 1) * width)
        projected = F.linear(x, attn.in_proj_weight[rows], attn.in_proj_bias[rows])
        tokens[name] = projected.view(b, n, heads, width // heads).transpose(1, 2)
    mask = None if prior is None else prior.to(x.dtype)
    # sum over terms of softmax(a b^T) v = (sum of the attention matrices) v
    out = sum(F.scaled_dot_product_attention(tokens[term[0]], tokens[term[1]], tokens["v"], attn_mask=mask)
              for term in terms)
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, width))


class DenseClipEncoder(nn.Module):
    """Per-patch CLIP embeddings from a ViT, from a second path through its last blocks (CLIP Surgery's design).

    In the last ``blocks`` blocks a second path accumulates each block's ``variant`` attention computed from the
    original path's normalised input (see ``LastBlock``: value-value with the residual and no MLP is CLIP
    Surgery's path; over one block, key-key with a neighbourhood prior and neither is NACLIP's). The global
    embedding comes from the original path, the patch embeddings from the new one, through the tower's final
    norm and projection. ``blocks=0`` gives the naive last-layer patch tokens. Positional embeddings are
    interpolated, so any input size that is a multiple of the patch size works.
    """

    def __init__(self, visual: nn.Module, blocks: int = 6, variant: LastBlock = LastBlock()):
        super().__init__()
        self.visual = check_supported(visual)
        depth = len(self.visual.transformer.resblocks)
        if not 0 <= blocks <= depth:
            raise ValueError(f"blocks must be in [0, {depth}], got {blocks}")
        self.blocks = blocks
        self.variant = variant

    @property
    def patch_size(self) -> int:
        return self.visual.patch_size[0]

    def _positions(self, grid: tuple[int, int]) -> torch.Tensor:
        pos = self.visual.positional_embedding
        trained = tuple(self.visual.grid_size)
        if grid == trained:
            return pos
        width = pos.shape[-1]
        table = pos[1:].reshape(1, *trained, width).permute(0, 3, 1, 2)
        table = F.interpolate(table.float(), size=grid, mode="bicubic", align_corners=False).to(pos.dtype)
        return torch.cat([pos[:1], table.permute(0, 2, 3, 1).reshape(-1, width)])

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """images: (B, 3, H, W) normalised, H and W multiples of the patch size. Returns the tokens entering the
        first block, (B, 1 + h*w, width) with the class token first, and the patch grid (h, w)."""
        visual = self.visual
        if images.shape[-1] % self.patch_size or images.shape[-2] % self.patch_size:
            raise ValueError(f"input size {tuple(images.shape[-2:])} is not a multiple of the patch size "
                             f"{self.patch_size}")
        x = visual.conv1(images)
        b, width, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([visual.class_embedding.view(1, 1, -1).expand(b, 1, width).to(x.dtype), x], dim=1)
        return visual.ln_pre(x + self._positions((h, w)).to(x.dtype)), (h, w)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: (B, 3, H, W) normalised, H and W multiples of the patch size.

        Returns global (B, D) and dense (B, D, H/p, W/p) embeddings in CLIP's joint space, not normalised.
        """
        pooled, dense, _ = self.features(images)
        return pooled, dense

    def features(self, images: torch.Tensor, blocks: Sequence[int] = ()
                 ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``forward``'s global (B, D) and dense (B, D, H/p, W/p) embeddings, plus the patch tokens leaving each
        block in ``blocks`` (indices into the tower's blocks, negative from the end): a list of (B, width, H/p, W/p)
        tensors in the tower's dtype, for decoders that read intermediate layers."""
        visual = self.visual
        resblocks = visual.transformer.resblocks
        if any(not -len(resblocks) <= index < len(resblocks) for index in blocks):
            raise ValueError(f"block indices {list(blocks)} out of range for a tower of {len(resblocks)} blocks")
        x, (h, w) = self.embed(images)
        b = x.shape[0]
        wanted = {index % len(resblocks) for index in blocks}
        variant = self.variant
        first = len(resblocks) - self.blocks
        prior = (neighbourhood_prior((h, w), variant.gaussian_std, x.device) if variant.gaussian_std is not None
                 else None)
        dense, taken = None, {}
        for index, block in enumerate(resblocks):
            if index == first:
                dense = x if variant.residual else torch.zeros_like(x)
            if dense is not None:
                dense = dense + block.ls_1(variant_attention(block, block.ln_1(x), variant.attention, prior))
                if variant.ffn:
                    dense = dense + block.ls_2(block.mlp(block.ln_2(dense)))
            x = block(x)
            if index in wanted:
                taken[index] = x[:, 1:].transpose(1, 2).reshape(b, -1, h, w)
        pooled, tokens = visual._pool(x)
        patches = visual.ln_post(dense[:, 1:]) if dense is not None else tokens
        if visual.final_ln_after_pool and dense is None:
            patches = visual.ln_post(patches)
        # row by row: a (B, width) @ proj product takes a different BLAS kernel for each small B and rounds
        # differently, and an image's embedding must not depend on what else is in the batch
        pooled = torch.cat([row @ visual.proj for row in pooled.split(1)])
        patches = patches @ visual.proj
        intermediates = [taken[index % len(resblocks)] for index in blocks]
        return pooled, patches.transpose(1, 2).reshape(b, -1, h, w), intermediates
