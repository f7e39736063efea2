"""Per-label maps from a dense CLIP encoder: the patch embeddings of a variant of the tower's last blocks (CLIP
Surgery, NACLIP, SCLIP, ClearCLIP) compared to the labels, or gradient relevance."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

from freelabel.clip.dense import DenseClipEncoder, LastBlock

# Each forward-only method's dense path, from its paper (relevance reads the tower's own attention instead).
VARIANTS = {
    # CLIP Surgery (Li et al. 2023): value-value attention added to the residual stream, over surgery_blocks blocks
    "surgery": LastBlock("vv", residual=True, ffn=False),
    # NACLIP (Hajimiri et al., WACV 2025): key-key attention plus a Gaussian neighbourhood prior, alone
    "naclip": LastBlock("kk", residual=False, ffn=False, gaussian_std=5.0),
    # SCLIP (Wang et al., ECCV 2024): correlative self-attention, softmax(q q^T) + softmax(k k^T), in place of the
    # block's own; residual and FFN kept (its official code, wangf3014/SCLIP clip/model.py)
    "sclip": LastBlock("qq+kk", residual=True, ffn=True),
    # ClearCLIP (Lan et al., ECCV 2024): query-query attention, alone
    "clearclip": LastBlock("qq", residual=False, ffn=False),
}


def dense_path(method: str, surgery_blocks: int, gaussian_std: float, depth: int) -> tuple[int, LastBlock]:
    """The dense path of ``method`` for a tower of ``depth`` blocks: how many last blocks it spans (surgery's
    ``surgery_blocks``, capped at the depth; one for the other forward-only methods, as in their papers; none for
    relevance) and its ``LastBlock`` variant (NACLIP's prior with ``gaussian_std``)."""
    if method == "relevance":
        return 0, LastBlock()
    variant = VARIANTS[method]
    if variant.gaussian_std is not None:
        variant = dataclasses.replace(variant, gaussian_std=gaussian_std)
    return (min(surgery_blocks, depth) if method == "surgery" else 1), variant


def cosine_similarity(dense: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Per-patch label similarity. dense: (B, D, h, w) and text: (K, D), unit-normalised along D.
    Returns (B, K, h, w) float32 in [-1, 1]."""
    return torch.einsum("bdhw,kd->bkhw", dense, text).float()


def surgery_similarity(dense: torch.Tensor, pooled: torch.Tensor, text: torch.Tensor,
                       empty_text: torch.Tensor | None = None) -> torch.Tensor:
    """Per-patch label similarity with the class-shared component removed ("feature surgery").

    dense: (B, D, h, w) and pooled: (B, D) image embeddings; text: (K, D) label embeddings, all unit-normalised
    along D. With several labels, the removed component is each patch's similarity to the labels' mean
    embedding weighted by softmax(2 x global similarity) / its mean; with one label it is the similarity to
    ``empty_text`` (the empty prompt's embedding, (D,)). Returns (B, K, h, w) float32.
    """
    similarity = cosine_similarity(dense, text)
    if text.shape[0] == 1:
        if empty_text is None:
            raise ValueError("a single label needs empty_text to subtract")
        redundant = torch.einsum("bdhw,d->bhw", dense, empty_text)
    else:
        weights = torch.softmax(2 * pooled @ text.T, dim=-1)
        weights = weights / weights.mean(dim=-1, keepdim=True)
        shared = (weights[:, :, None] * text[None]).mean(dim=1)  # (B, D)
        redundant = torch.einsum("bdhw,bd->bhw", dense, shared)
    return similarity - redundant[:, None].float()


def _attention_with_probabilities(block: ResidualAttentionBlock, x: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's self-attention computed explicitly: returns its output (B, N, width) and the attention
    probabilities (B, heads, N, N), which relevance needs gradients for."""
    attn = block.attn
    width, heads = attn.embed_dim, attn.num_heads
    b, n, _ = x.shape
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(b, n, 3, heads, width // heads).unbind(2)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    probabilities = torch.softmax(q @ k.transpose(-1, -2) * (width // heads) ** -0.5, dim=-1)
    out = (probabilities @ v).transpose(1, 2).reshape(b, n, width)
    return attn.out_proj(out), probabilities


def relevance_maps(encoder: DenseClipEncoder, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Gradient-weighted attention relevance (Chefer et al.), one backward pass per label.

    For each label, the image-text similarity is back-propagated to every block's attention; relevance starts
    as the identity and accumulates R += mean_heads(relu(grad * attention)) @ R. The map is the pooled output's
    row of R over the patches. images: (B, 3, H, W) normalised; text: (K, D) unit label embeddings.
    Returns (B, K, H/p, W/p) float32, >= 0.
    """
    visual = encoder.visual
    with torch.enable_grad():
        x, (h, w) = encoder.embed(images)
        attentions = []
        for block in visual.transformer.resblocks:
            out, probabilities = _attention_with_probabilities(block, block.ln_1(x))
            attentions.append(probabilities)
            x = x + block.ls_1(out)
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        pooled, _ = visual._pool(x)
        scores = F.normalize(pooled @ visual.proj, dim=-1) @ text.T  # (B, K)
        b, n = x.shape[:2]
        maps = []
        for label in range(text.shape[0]):
            grads = torch.autograd.grad(scores[:, label].sum(), attentions, retain_graph=label < text.shape[0] - 1)
            relevance = torch.eye(n, device=x.device).expand(b, n, n)
            for probabilities, grad in zip(attentions, grads):
                relevance = relevance + (grad * probabilities).clamp_min(0).mean(dim=1) @ relevance
            row = relevance[:, 0, 1:] if visual.pool_type == "tok" else relevance[:, 1:, 1:].mean(dim=1)
            maps.append(row.reshape(b, h, w))
    return torch.stack(maps, dim=1).detach().float()


def scale_per_label(maps: torch.Tensor) -> torch.Tensor:
    """(K, H, W) float -> each map min-max scaled to [0, 1] (a constant map becomes 0)."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    return (maps - low) / (high - low).clamp_min(1e-6)
