"""The selected-label segmenter's modules: every architecture builds and forwards, batched top-k gather, rank
norm, the ignore logic of the pixel targets and the multi-label loss."""

import pytest
import torch

from freelabel.clip.config import ClipConfig
from freelabel.clip.loading import load_clip
from freelabel.errors import ConfigError
from freelabel.segmenter.config import SegmenterConfig
from freelabel.segmenter.factory import architecture_config, create_segmenter, list_architectures
from freelabel.segmenter.losses import asymmetric_loss, present_labels, ranked_targets, segmenter_loss
from freelabel.segmenter.modeling import UNSELECTED_LOGIT, RankNorm, SegmenterOutput, gather_labels, select_top_k
from freelabel.segmenter.trainer import TrainConfig


def test_architectures_are_shipped():
    assert {"rankseg", "rankseg-small"} <= set(list_architectures())


@pytest.mark.parametrize("architecture", list_architectures())
@pytest.mark.parametrize("model", ["test-tiny-vit", "test-tiny-vit-avgpool"])
def test_every_architecture_builds_and_forwards(architecture, model, device):
    clip = load_clip(ClipConfig(model=model, pretrained="random", device=device))
    segmenter = create_segmenter(clip, architecture_config(architecture))
    images = torch.randn(2, 3, 32, 48, device=device)
    n = segmenter.config.top_k + 3
    out = segmenter(images, clip.encode_labels([f"thing {i}" for i in range(n)]))
    k = segmenter.config.top_k
    assert out.label_logits.shape == (2, n) and out.selected.shape == (2, k) and out.selected_valid.all()
    assert out.pixel_logits.shape == (2, k + 1, 8, 12)
    assert torch.isfinite(out.pixel_logits).all() and torch.isfinite(out.label_logits).all()
    assert segmenter.input_multiple == max(4, segmenter.encoder.patch_size)  # patch sizes 8 and 16


def test_top_k_gather_at_batch_above_one_matches_per_image():
    logits = torch.randn(4, 10)
    valid = torch.rand(4, 10) > 0.3
    valid[:, 0] = True
    text = torch.randn(4, 10, 6)
    indices, chosen_valid = select_top_k(logits, valid, 3)
    gathered = gather_labels(text, indices)
    for b in range(4):
        order = [i for i in logits[b].argsort(descending=True).tolist() if valid[b, i]][:3]
        assert indices[b][chosen_valid[b]].tolist() == order
        assert torch.equal(gathered[b, :len(order)], text[b, order])


def test_fewer_candidates_than_k_are_marked_invalid():
    valid = torch.tensor([[True, True, False, False, False]])
    _, chosen_valid = select_top_k(torch.randn(1, 5), valid, 4)
    assert chosen_valid.tolist() == [[True, True, False, False]]


def test_rank_norm_is_layer_norm_over_ranks_and_ignores_padding():
    norm = RankNorm(5)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 6.0))
        norm.bias.copy_(torch.arange(5.0))
    logits = torch.randn(2, 5, 4, 4)
    reference = torch.nn.LayerNorm(5)
    with torch.no_grad():
        reference.weight.copy_(norm.weight)
        reference.bias.copy_(norm.bias)
    expected = reference(logits.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(logits, torch.ones(2, 5, dtype=torch.bool)), expected, rtol=1e-4, atol=1e-4)
    valid = torch.tensor([[True, True, True, False, False]] * 2)
    changed = logits.clone()
    changed[:, 3:] = 1000.0  # padding must not move the statistics
    out = norm(changed, valid)
    torch.testing.assert_close(out[:, :3], norm(logits, valid)[:, :3])
    assert (out[:, 3:] == UNSELECTED_LOGIT).all()


def test_ranked_targets_ignore_unselected_labels_and_keep_ignore():
    mask = torch.tensor([[[0, 1, 2], [3, 255, 1]]])
    selected = torch.tensor([[2, 1]])  # label 3 (index 2) ranked first, label 2 (index 1) second; label 1 not selected
    targets = ranked_targets(mask, selected, torch.tensor([[True, True]]), num_labels=3)
    assert targets.tolist() == [[[0, 255, 2], [1, 255, 255]]]


def test_present_labels_ignores_background_and_ignore():
    mask = torch.tensor([[[0, 2, 255], [2, 0, 0]], [[0, 0, 0], [0, 0, 0]]])
    assert present_labels(mask, 3).tolist() == [[0, 1, 0], [0, 0, 0]]


def test_asymmetric_loss_prefers_right_scores_and_forgives_slightly_positive_negatives():
    targets = torch.tensor([[1.0, 0.0, 0.0]])
    weights = torch.ones(1, 3)
    right = asymmetric_loss(torch.tensor([[6.0, -6.0, -6.0]]), targets, weights)
    wrong = asymmetric_loss(torch.tensor([[-6.0, 6.0, 6.0]]), targets, weights)
    assert right < 0.01 < wrong
    # a negative at probability below the clip (0.05) costs nothing
    assert asymmetric_loss(torch.tensor([[-4.0]]), torch.zeros(1, 1), torch.ones(1, 1)) == 0
    assert asymmetric_loss(torch.zeros(1, 3), targets, torch.zeros(1, 3)) == 0


def test_loss_has_pixel_and_multilabel_parts_and_survives_an_all_ignored_batch():
    out = SegmenterOutput(label_logits=torch.zeros(2, 3, requires_grad=True), selected=torch.tensor([[0, 1]] * 2),
                          selected_valid=torch.ones(2, 2, dtype=torch.bool),
                          pixel_logits=torch.zeros(2, 3, 2, 2, requires_grad=True))
    mask = torch.full((2, 8, 8), 255)
    loss, parts = segmenter_loss(out, mask, torch.tensor([False, False]), torch.tensor([True, True]), 3, 5.0)
    assert parts["pixel"] == 0 and parts["multilabel"] > 0
    loss.backward()
    assert out.pixel_logits.grad is not None


@pytest.mark.parametrize("values", [{"top_k": 0}, {"decoder_dim": 100}, {"heads": 3}, {"stem_dim": -8},
                                    {"rank_norm": "yes"}])
def test_bad_architecture_settings_are_config_errors(values):
    with pytest.raises(ConfigError):
        SegmenterConfig(**values)


def test_unknown_architecture_and_setting_are_config_errors():
    with pytest.raises(ConfigError, match="unknown segmenter architecture"):
        architecture_config("nope")
    with pytest.raises(ConfigError, match="unknown segmenter setting"):
        architecture_config("rankseg", depth=3)


@pytest.mark.parametrize("values", [{"epochs": 0}, {"lr": -1.0}, {"precision": "fp8"}, {"scale_range": (2, 1)},
                                    {"val_fraction": 1.0}, {"architecture": "nope"}, {"top_k": 0}])
def test_bad_training_settings_are_config_errors(values):
    with pytest.raises(ConfigError):
        TrainConfig(**values)
