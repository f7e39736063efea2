"""Per-label maps from a dense CLIP encoder: feature surgery over value-value features, or gradient relevance."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

from freelabel.clip.dense import DenseClipEncoder


def surgery_similarity(dense: torch.Tensor, pooled: torch.Tensor, text: torch.Tensor,
                       empty_text: torch.Tensor | None = None) -> torch.Tensor:
    """Per-patch label similarity with the class-shared component removed ("feature surgery").

    dense: (B, D, h, w) and pooled: (B, D) image embeddings; text: (K, D) label embeddings, all unit-normalised
    along D. With several labels, the removed component is each patch's similarity to the labels' mean
    embedding weighted by softmax(2 x global similarity) / its mean; with one label it is the similarity to
    ``empty_text`` (the empty prompt's embedding, (D,)). Returns (B, K, h, w) float32.
    """
    similarity = torch.einsum("bdhw,kd->bkhw", dense, text)
    if text.shape[0] == 1:
        if empty_text is None:
            raise ValueError("a single label needs empty_text to subtract")
        redundant = torch.einsum("bdhw,d->bhw", dense, empty_text)
    else:
        weights = torch.softmax(2 * pooled @ text.T, dim=-1)
        weights = weights / weights.mean(dim=-1, keepdim=True)
        shared = (weights[:, :, None] * text[None]).mean(dim=1)  # (B, D)
        redundant = torch.einsum("bdhw,bd->bhw", dense, shared)
    return (similarity - redundant[:, None]).float()


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
