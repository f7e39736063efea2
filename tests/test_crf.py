import numpy as np
import pytest
import torch

from freelabel.pseudo.crf import CrfConfig, refine, refine_torch


def _blurred_square(size=48):
    image = np.full((size, size, 3), 40, dtype=np.uint8)
    image[12:36, 12:36] = (220, 40, 40)
    truth = np.zeros((size, size), dtype=np.int64)
    truth[12:36, 12:36] = 1
    # a coarse, shifted, soft foreground map, as a ViT's patch grid would give
    coarse = np.zeros((size // 8, size // 8), dtype=np.float32)
    coarse[1:4, 1:4] = 1
    soft = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None, None], size=(size, size),
                                           mode="bilinear", align_corners=False)[0, 0].numpy()
    foreground = 0.25 + 0.5 * soft
    return image, truth, np.stack([1 - foreground, foreground]).astype(np.float32)


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_crf_snaps_a_coarse_map_to_the_object(backend):
    image, truth, probabilities = _blurred_square()
    # wider, stronger kernels than the defaults (tuned on photos, where they barely act): the mechanism at work
    config = CrfConfig(backend=backend, gaussian_compat=1.0, bilateral_sxy=30.0, bilateral_srgb=13.0)
    refined = refine(probabilities, image, config)
    assert refined.shape == probabilities.shape and refined.dtype == np.float32
    assert np.allclose(refined.sum(axis=0), 1, atol=1e-4) and refined.min() >= 0
    before = (probabilities.argmax(0) == truth).mean()
    after = (refined.argmax(0) == truth).mean()
    assert after > before + 0.05, (before, after)


def test_torch_backend_batches_like_single_images():
    image, _, probabilities = _blurred_square()
    config = CrfConfig(backend="torch")
    single = refine(probabilities, image, config)
    batch = refine_torch(torch.from_numpy(np.stack([probabilities] * 2)), torch.from_numpy(np.stack([image] * 2)),
                         config)
    assert torch.allclose(batch[1], torch.from_numpy(single), atol=1e-5)


def test_crf_errors():
    image, _, probabilities = _blurred_square()
    with pytest.raises(ValueError, match="differ in size"):
        refine(probabilities[:, :10], image)
    with pytest.raises(ValueError, match="unknown CRF backend"):
        CrfConfig(backend="magic")
    with pytest.raises(ValueError, match="odd"):
        CrfConfig(window=4)


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_crf_without_kernels_returns_the_unary(backend):
    image, _, probabilities = _blurred_square()
    config = CrfConfig(backend=backend, gaussian_compat=0.0, bilateral_compat=0.0)
    assert np.allclose(refine(probabilities, image, config), probabilities, atol=1e-4)
