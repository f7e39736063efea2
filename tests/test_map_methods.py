"""The forward-only map methods' dense paths (CLIP Surgery, NACLIP, SCLIP, ClearCLIP) against their papers' equations
computed directly on a tiny ViT, and through the Labeler."""

import math

import numpy as np
import pytest
import torch

from freelabel.clip.dense import DenseClipEncoder, LastBlock, neighbourhood_prior
from freelabel.clip.loading import load_clip
from freelabel.pseudo.config import METHODS, LabelerConfig, PamrConfig
from freelabel.pseudo.labeler import Labeler
from freelabel.pseudo.maps import dense_path
from freelabel.toy.world import scenes


def _softmax_logits(a, b, scale, prior=0.0):
    return torch.softmax(a @ b.transpose(-1, -2) * scale + prior, dim=-1)


# per method: its attention matrix (B, heads, N, N) from q, k, v, the 1/sqrt(d) scale and the prior, whether the
# attention output is added to the residual stream, and whether the block's FFN follows, written out from each paper
# (SCLIP's FFN from its official code)
EQUATIONS = {
    "surgery": (lambda q, k, v, s, prior: _softmax_logits(v, v, s), True, False),
    "naclip": (lambda q, k, v, s, prior: _softmax_logits(k, k, s, prior), False, False),
    "sclip": (lambda q, k, v, s, prior: _softmax_logits(q, q, s) + _softmax_logits(k, k, s), True, True),
    "clearclip": (lambda q, k, v, s, prior: _softmax_logits(q, q, s), False, False),
}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_clip("test-tiny-vit", "random")


def _gaussian_prior(h, w, std):
    """NACLIP's prior written out pixel pair by pixel pair: 0 to and from the class token."""
    prior = torch.zeros(1 + h * w, 1 + h * w)
    for i in range(h * w):
        for j in range(h * w):
            distance2 = (i // w - j // w) ** 2 + (i % w - j % w) ** 2
            prior[1 + i, 1 + j] = math.exp(-distance2 / (2 * std ** 2))
    return prior


def test_neighbourhood_prior_is_the_gaussian_of_grid_distances():
    prior = neighbourhood_prior((3, 5), 2.0)
    assert torch.allclose(prior, _gaussian_prior(3, 5, 2.0), atol=1e-6)


def _direct_dense(visual, images, attention, residual, ffn, prior):
    """The patch embeddings of a one-block dense path, from the equations: (B, D, h, w)."""
    encoder = DenseClipEncoder(visual, 0)
    x, (h, w) = encoder.embed(images)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    last = visual.transformer.resblocks[-1]
    y = last.ln_1(x)
    b, n, width = y.shape
    heads = last.attn.num_heads
    q, k, v = (part.reshape(b, n, heads, width // heads).transpose(1, 2)
               for part in (y @ last.attn.in_proj_weight.T + last.attn.in_proj_bias).split(width, dim=-1))
    out = attention(q, k, v, (width // heads) ** -0.5, prior) @ v
    out = last.attn.out_proj(out.transpose(1, 2).reshape(b, n, width))
    dense = x + out if residual else out
    if ffn:
        dense = dense + last.mlp(last.ln_2(dense))
    patches = visual.ln_post(dense[:, 1:]) @ visual.proj
    return patches.transpose(1, 2).reshape(b, -1, h, w)


@pytest.mark.parametrize("method", list(EQUATIONS))
def test_each_methods_last_block_follows_its_equations(tiny, method):
    visual = tiny.model.visual
    images = torch.randn(2, 3, 32, 48)  # a 4 x 6 grid: rows and columns of the prior cannot be swapped unseen
    blocks, variant = dense_path(method, 1, 1.5, len(visual.transformer.resblocks))
    assert blocks == 1
    _, dense = DenseClipEncoder(visual, blocks, variant)(images)
    attention, residual, ffn = EQUATIONS[method]
    prior = _gaussian_prior(4, 6, 1.5) if method == "naclip" else None
    expected = _direct_dense(visual, images, attention, residual, ffn, prior)
    assert dense.shape == (2, visual.output_dim, 4, 6) and torch.isfinite(dense).all()
    assert torch.allclose(dense, expected, atol=1e-5), (dense - expected).abs().max()


def test_the_towers_own_block_gives_its_own_tokens(tiny):
    visual = tiny.model.visual
    images = torch.randn(2, 3, 32, 32)
    _, own = DenseClipEncoder(visual, 1, LastBlock("qk", residual=True, ffn=True))(images)
    _, naive = DenseClipEncoder(visual, 0)(images)
    assert torch.allclose(own, naive, atol=1e-5)


@pytest.mark.parametrize("name", ["test-tiny-vit", "test-tiny-vit-avgpool"])  # class token / average pooling
@pytest.mark.parametrize("method", list(EQUATIONS))
def test_every_method_gives_finite_maps_at_any_size(name, method):
    torch.manual_seed(0)
    visual = load_clip(name, "random").model.visual
    encoder = DenseClipEncoder(visual, *dense_path(method, 6, 5.0, len(visual.transformer.resblocks)))
    patch = visual.patch_size[0]
    pooled, dense = encoder(torch.randn(3, 3, 5 * patch, 3 * patch))
    assert pooled.shape == (3, visual.output_dim) and dense.shape == (3, visual.output_dim, 5, 3)
    assert torch.isfinite(dense).all()
    square = torch.randn(2, 3, *visual.image_size)  # the model's own size: the global embedding is the model's own
    assert torch.allclose(encoder(square)[0], visual(square), atol=1e-5)


def test_last_block_settings_are_checked():
    with pytest.raises(ValueError, match="unknown attention"):
        LastBlock("kq")
    with pytest.raises(ValueError, match="gaussian_std"):
        LastBlock("kk", gaussian_std=0.0)


@pytest.mark.parametrize("method", METHODS)
def test_the_labeler_runs_each_method_with_pamr_and_crf(tiny, method):
    scene = next(scenes(4, 1))
    config = LabelerConfig(method=method, scales=(1.0, 1.5), pamr=PamrConfig(iterations=3, dilations=(1, 2)))
    labeler = Labeler(tiny, config=config)
    labeler.set_image(scene.image)
    result = labeler.segment(scene.labels)
    k, (h, w) = len(scene.labels), scene.image.shape[:2]
    assert result.scores.shape == (k, h, w) and np.isfinite(result.scores).all()
    assert result.probabilities.shape == (k + 1, h, w) and np.allclose(result.probabilities.sum(axis=0), 1, atol=1e-4)
    assert set(np.unique(result.mask).tolist()) <= set(range(k + 1)) | {255}


def test_feature_surgery_is_the_methods_own_unless_set(tiny):
    image = next(scenes(4, 1)).image
    labels = ["red circle", "blue square"]

    def scores(**settings):
        labeler = Labeler(tiny, config=LabelerConfig(method="naclip", crf=None, **settings))
        labeler.set_image(image)
        return labeler.segment(labels).scores

    assert np.array_equal(scores(), scores(feature_surgery=False))  # naclip's own: plain cosine similarity
    assert not np.allclose(scores(), scores(feature_surgery=True))
