import pytest
import torch

from freelabel.errors import ConfigError
from freelabel.pseudo.config import PamrConfig
from freelabel.pseudo.pamr import pamr, pamr_affinities


def _offset_edge(device="cpu", edge=20, coarse_edge=27, size=48):
    """A red left part and a blue right part meeting at column ``edge``, and a coarse two-class map whose boundary
    lies at ``coarse_edge`` instead: (1, H, W, 3) uint8, (1, 2, H, W) probabilities and the (H, W) true class."""
    image = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    image[..., :edge, :] = torch.tensor([200, 30, 30], dtype=torch.uint8)
    image[..., edge:, :] = torch.tensor([30, 30, 200], dtype=torch.uint8)
    image = (image.int() + torch.randint(-8, 9, image.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 255)
    right = torch.zeros(size, size)
    right[:, coarse_edge:] = 0.8
    right[:, :coarse_edge] = 0.2
    truth = torch.zeros(size, size, dtype=torch.long)
    truth[:, edge:] = 1
    return image.to(torch.uint8).to(device), torch.stack([1 - right, right])[None].to(device), truth


def test_pamr_moves_a_coarse_boundary_to_the_colour_edge(device):
    image, probabilities, truth = _offset_edge(device)
    refined = pamr(probabilities, image, PamrConfig(iterations=30, dilations=(2, 4, 8)))
    assert refined.shape == probabilities.shape and refined.dtype == torch.float32 and refined.device == image.device
    assert torch.allclose(refined.sum(dim=1), torch.ones((), device=device), atol=1e-5) and refined.min() >= 0
    before = (probabilities[0].argmax(0).cpu() == truth).float().mean()
    after = (refined[0].argmax(0).cpu() == truth).float().mean()
    assert before < 0.9 and after > 0.99, (before, after)


def test_one_iteration_follows_the_papers_equations_pixel_by_pixel():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (1, 10, 12, 3), dtype=torch.uint8)
    probabilities = torch.softmax(torch.randn(1, 3, 10, 12), dim=1)
    dilations = (1, 2)
    refined = pamr(probabilities, image, PamrConfig(iterations=1, dilations=dilations))
    rgb = image[0].permute(2, 0, 1).float()

    def at(tensor, y, x):  # outside the image: its nearest border pixel
        return tensor[:, min(max(y, 0), 9), min(max(x, 0), 11)]

    for y, x in [(0, 0), (4, 7), (9, 11), (1, 10)]:
        ring = [(dy, dx) for d in dilations for dy in (-d, 0, d) for dx in (-d, 0, d)]
        sigma = torch.stack([at(rgb, y + dy, x + dx) for dy, dx in ring]).std(dim=0)  # per colour channel
        neighbours = [(dy, dx) for dy, dx in ring if dy or dx]
        logits = torch.stack([(-(rgb[:, y, x] - at(rgb, y + dy, x + dx)).abs() / (1e-8 + 0.1 * sigma)).mean()
                              for dy, dx in neighbours])
        weights = torch.softmax(logits, dim=0)
        expected = sum(w * at(probabilities[0], y + dy, x + dx) for w, (dy, dx) in zip(weights, neighbours))
        assert torch.allclose(refined[0, :, y, x], expected, atol=1e-5), (y, x)


def test_affinities_are_a_distribution_over_the_neighbours_that_avoids_other_colours():
    image, _, _ = _offset_edge()
    affinities = pamr_affinities(image.permute(0, 3, 1, 2), (1, 2))
    assert affinities.shape == (1, 16, 48, 48)
    assert torch.allclose(affinities.sum(dim=1), torch.ones(1, 48, 48), atol=1e-5)
    # the pixel left of the edge: its right neighbours (offset dx = +1, +2) are blue, so nearly ignored
    right = [i for i, (dy, dx) in enumerate((dy, dx) for d in (1, 2) for dy in (-d, 0, d) for dx in (-d, 0, d)
                                            if dy or dx) if dx > 0]
    assert affinities[0, right, 24, 19].sum() < 1e-3


def test_a_batch_refines_like_single_images_and_padding_classes_stay_zero(device):
    image, probabilities, _ = _offset_edge(device)
    other_image, other, _ = _offset_edge(device, edge=30, coarse_edge=24)
    padded = torch.cat([probabilities, torch.zeros_like(probabilities[:, :1])], dim=1)  # a third, padding class
    other = torch.cat([other[:, :1] * 0.5, other[:, :1] * 0.5, other[:, 1:]], dim=1)
    config = PamrConfig(iterations=5, dilations=(1, 3))
    batch = pamr(torch.cat([padded, other]), torch.cat([image, other_image]), config)
    assert torch.allclose(batch[:1], pamr(padded, image, config), atol=1e-6)
    assert torch.allclose(batch[1:], pamr(other, other_image, config), atol=1e-6)
    assert (batch[0, 2] == 0).all()


def test_pamr_checks_its_inputs_and_settings():
    image, probabilities, _ = _offset_edge()
    with pytest.raises(ValueError, match="uint8"):
        pamr(probabilities, image.float())
    with pytest.raises(ValueError, match="differ"):
        pamr(probabilities[..., :40], image)
    for settings in (dict(iterations=0), dict(dilations=()), dict(dilations=(0, 2))):
        with pytest.raises(ConfigError):
            PamrConfig(**settings)
