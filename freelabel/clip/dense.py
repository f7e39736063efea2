"""Dense CLIP features over open_clip's own ViT weights: per-patch embeddings with a value-value attention path."""

from __future__ import annotations

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


class DenseClipEncoder(nn.Module):
    """Per-patch CLIP embeddings from a ViT, with a value-value attention path (CLIP Surgery).

    In the last ``surgery_blocks`` blocks a second path accumulates value-value attention (q = k = v, no MLP)
    computed from the original path's normalised input; the global embedding comes from the original path,
    the patch embeddings from the new one. ``surgery_blocks=0`` gives the naive last-layer patch tokens.
    Positional embeddings are interpolated, so any input size that is a multiple of the patch size works.
    """

    def __init__(self, visual: nn.Module, surgery_blocks: int = 6):
        super().__init__()
        self.visual = check_supported(visual)
        depth = len(self.visual.transformer.resblocks)
        if not 0 <= surgery_blocks <= depth:
            raise ValueError(f"surgery_blocks must be in [0, {depth}], got {surgery_blocks}")
        self.surgery_blocks = surgery_blocks

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

    @staticmethod
    def _value_value(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
        attn = block.attn
        width, heads = attn.embed_dim, attn.num_heads
        value = F.linear(x, attn.in_proj_weight[2 * width:], attn.in_proj_bias[2 * width:])
        b, n, _ = value.shape
        value = value.view(b, n, heads, width // heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(value, value, value)
        return attn.out_proj(out.transpose(1, 2).reshape(b, n, width))

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
        first_surgery = len(resblocks) - self.surgery_blocks
        dense, taken = None, {}
        for index, block in enumerate(resblocks):
            if index == first_surgery:
                dense = x
            if dense is not None:
                dense = dense + block.ls_1(self._value_value(block, block.ln_1(x)))
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
