import numpy as np
import pytest
import torch

from freelabel.errors import ConfigError
from freelabel.pseudo.config import CrfConfig
from freelabel.pseudo.crf import refine


def _blurred_square(size=48, device="cpu"):
    """A red square on grey, its truth, and a coarse shifted soft map of it: (1, 2, H, W) probabilities and a
    (1, H, W, 3) uint8 image on ``device``."""
    image = np.full((size, size, 3), 40, dtype=np.uint8)
    image[12:36, 12:36] = (220, 40, 40)
    truth = np.zeros((size, size), dtype=np.int64)
    truth[12:36, 12:36] = 1
    # a coarse, shifted, soft foreground map, as a ViT's patch grid would give
    coarse = torch.zeros(1, 1, size // 8, size // 8)
    coarse[..., 1:4, 1:4] = 1
    foreground = 0.25 + 0.5 * torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                                              align_corners=False)[0]
    probabilities = torch.cat([1 - foreground, foreground])[None].to(device)
    return torch.from_numpy(image)[None].to(device), truth, probabilities


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_crf_snaps_a_coarse_map_to_the_object(backend, device):
    image, truth, probabilities = _blurred_square(device=device)
    # wider kernels than the defaults (chosen on photos): the mechanism at work
    config = CrfConfig(backend=backend, gaussian_compat=1.0, bilateral_sxy=30.0, bilateral_srgb=13.0)
    refined = refine(probabilities, image, config)
    assert refined.shape == probabilities.shape and refined.dtype == torch.float32
    assert refined.device == probabilities.device
    assert torch.allclose(refined.sum(dim=1), torch.ones(1, device=device), atol=1e-4) and refined.min() >= 0
    before = (probabilities[0].argmax(0).cpu().numpy() == truth).mean()
    after = (refined[0].argmax(0).cpu().numpy() == truth).mean()
    assert after > before + 0.05, (before, after)


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_a_batch_refines_like_single_images(backend, device):
    image, _, probabilities = _blurred_square(device=device)
    config = CrfConfig(backend=backend)
    single = refine(probabilities, image, config)
    other = torch.flip(probabilities, dims=[-1])  # a different second image in the batch
    batch = refine(torch.cat([other, probabilities]), torch.cat([torch.flip(image, dims=[2]), image]), config)
    assert torch.allclose(batch[1:], single, atol=1e-5)
    assert not torch.allclose(batch[:1], single, atol=1e-3)


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_padding_classes_stay_zero_and_change_nothing(backend, device):
    image, _, probabilities = _blurred_square(device=device)
    config = CrfConfig(backend=backend)
    single = refine(probabilities, image, config)
    # the image as the first of a batch whose other image has one more class: one padding class for it
    three = torch.softmax(torch.randn(1, 3, *probabilities.shape[2:], device=device), dim=1)
    padded = torch.cat([torch.cat([probabilities, torch.zeros_like(probabilities[:, :1])], dim=1), three])
    valid = torch.tensor([[True, True, False], [True, True, True]], device=device)
    batch = refine(padded, torch.cat([image, image]), config, valid)
    assert (batch[0, 2] == 0).all()
    if device == "cpu":  # the per-image result, to the bit
        assert torch.equal(batch[:1, :2], single)
    else:
        assert torch.allclose(batch[:1, :2], single, atol=1e-5)
    with pytest.raises(ValueError, match="valid"):
        refine(padded, torch.cat([image, image]), config, valid[:, :2])


def test_crf_errors():
    image, _, probabilities = _blurred_square()
    with pytest.raises(ValueError, match="differ in size"):
        refine(probabilities[:, :, :10], image)
    with pytest.raises(ValueError, match="uint8"):
        refine(probabilities, image.float())
    for bad in (dict(backend="magic"), dict(window=4), dict(iterations=0), dict(bilateral_srgb=0.0),
                dict(gaussian_compat=-1.0), dict(downsample=0)):
        with pytest.raises(ConfigError):
            CrfConfig(**bad)


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_crf_without_kernels_returns_the_unary(backend):
    image, _, probabilities = _blurred_square()
    config = CrfConfig(backend=backend, gaussian_compat=0.0, bilateral_compat=0.0)
    assert torch.allclose(refine(probabilities, image, config), probabilities, atol=1e-4)
