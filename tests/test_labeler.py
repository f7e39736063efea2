import numpy as np
import pytest
import torch
import torch.nn.functional as F

from freelabel.clip.loading import load_clip
from freelabel.errors import FreelabelError
from freelabel.pseudo.config import LabelerConfig
from freelabel.pseudo.labeler import Labeler
from freelabel.clip.dense import DenseClipEncoder, UnsupportedModelError
from freelabel.pseudo.maps import relevance_maps, surgery_similarity
from freelabel.toy.world import scenes


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_clip("test-tiny-vit", "random")


@pytest.mark.parametrize("name", ["test-tiny-vit", "test-tiny-vit-avgpool"])  # class token / average pooling
def test_global_embedding_is_the_models_own_and_naive_tokens_without_surgery(name):
    torch.manual_seed(0)
    tiny = load_clip(name, "random")
    x = tiny.images_to_tensor(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    visual = tiny.model.visual
    grid = x.shape[-1] // visual.patch_size[0]
    for blocks in range(len(visual.transformer.resblocks) + 1):
        pooled, dense = DenseClipEncoder(visual, blocks)(x)
        assert torch.allclose(pooled, tiny.model.encode_image(x), atol=1e-5)  # the original path is untouched
        assert dense.shape == (2, visual.output_dim, grid, grid) and torch.isfinite(dense).all()
    _, naive = DenseClipEncoder(visual, 0)(x)
    _, surgery = DenseClipEncoder(visual, 1)(x)
    assert not torch.allclose(naive, surgery)


def test_any_input_size_through_interpolated_positions(tiny):
    encoder = DenseClipEncoder(tiny.model.visual, 1)
    pooled, dense = encoder(torch.randn(1, 3, 48, 72))
    assert pooled.shape == (1, 32) and dense.shape == (1, 32, 6, 9)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        encoder(torch.randn(1, 3, 50, 72))
    with pytest.raises(ValueError):
        DenseClipEncoder(tiny.model.visual, 3)  # deeper than the model


def test_unsupported_architecture_is_a_clear_error():
    clip = load_clip("test-tiny-resnet", "random")
    with pytest.raises(UnsupportedModelError, match="ViT"):
        Labeler(clip)


def test_feature_surgery_removes_what_all_labels_share():
    dense = F.normalize(torch.randn(1, 8, 3, 3), dim=1)
    pooled = F.normalize(torch.randn(1, 8), dim=-1)
    same = F.normalize(torch.randn(1, 8), dim=-1).repeat(3, 1)
    assert surgery_similarity(dense, pooled, same).abs().max() < 1e-5
    text = F.normalize(torch.randn(1, 8), dim=-1)
    empty = F.normalize(torch.randn(8), dim=-1)
    single = surgery_similarity(dense, pooled, text, empty)
    expected = torch.einsum("bdhw,kd->bkhw", dense, text) - torch.einsum("bdhw,d->bhw", dense, empty)[:, None]
    assert torch.allclose(single, expected, atol=1e-6)
    with pytest.raises(ValueError, match="empty_text"):
        surgery_similarity(dense, pooled, text)


def test_relevance_maps_one_per_label(tiny):
    encoder = DenseClipEncoder(tiny.model.visual, 0)
    maps = relevance_maps(encoder, torch.randn(2, 3, 32, 32), tiny.encode_labels(["a", "b", "c"]))
    assert maps.shape == (2, 3, 4, 4) and (maps >= 0).all() and torch.isfinite(maps).all()


@pytest.mark.parametrize("method", ["surgery", "relevance"])
def test_segment_shapes_and_ranges(tiny, method):
    scene = next(scenes(4, 1))
    labeler = Labeler(tiny, config=LabelerConfig(method=method, scales=(1.0, 1.5), window=32))
    labeler.set_image(scene.image)
    result = labeler.segment(scene.labels)
    k, (h, w) = len(scene.labels), scene.image.shape[:2]
    assert result.scores.shape == (k, h, w) and result.scores.min() >= 0 and result.scores.max() <= 1 + 1e-6
    assert result.probabilities.shape == (k + 1, h, w)
    assert np.allclose(result.probabilities.sum(axis=0), 1, atol=1e-4)
    assert result.mask.shape == (h, w) and result.mask.dtype == np.uint8
    assert set(np.unique(result.mask).tolist()) <= set(range(k + 1)) | {255}


def test_one_encoder_pass_serves_many_queries(tiny):
    labeler = Labeler(tiny, config=LabelerConfig(crf=None))
    calls = []
    forward = labeler.encoder.forward
    labeler.encoder.forward = lambda x: calls.append(len(x)) or forward(x)
    labeler.set_image(next(scenes(1, 1)).image)
    passes = len(calls)
    first = labeler.segment(["red circle", "blue square"])
    second = labeler.segment(["green triangle"])
    again = labeler.segment(["red circle", "blue square"])
    assert len(calls) == passes  # no encoder pass after set_image
    assert second.scores.shape[0] == 1 and np.array_equal(first.mask, again.mask)


def test_prepared_labels_need_no_text_pass_later():
    clip = load_clip("test-tiny-vit", "random", text_cache="off")  # its own text cache, in memory only
    labeler = Labeler(clip, config=LabelerConfig(crf=None, background_words=("sky",)))
    labeler.prepare_labels(["red circle", "blue square", "green triangle"])
    calls = []
    clip.model.token_embedding.register_forward_hook(lambda *_: calls.append(1))  # one per text-tower pass
    labeler.set_image(next(scenes(1, 1)).image)
    labeler.segment(["green triangle"])
    labeler.segment(["red circle", "blue square"])
    assert not calls
    labeler.segment(["striped circle"])  # not prepared: encoded on first use
    assert calls


def test_background_words_and_ignore_threshold(tiny):
    image = next(scenes(2, 1)).image
    strict = Labeler(tiny, config=LabelerConfig(crf=None, ignore_threshold=1.0, background_words=("sky",)))
    strict.set_image(image)
    result = strict.segment(["red circle"])
    assert result.scores.shape[0] == 1 and result.probabilities.shape[0] == 2
    assert (result.mask == 255).mean() > 0.5  # almost nothing is fully certain at threshold 1.0


def test_labeler_errors(tiny):
    labeler = Labeler(tiny)
    with pytest.raises(FreelabelError, match="set_image"):
        labeler.segment(["cat"])
    with pytest.raises(ValueError, match="uint8"):
        labeler.set_image(np.zeros((8, 8, 3), dtype=np.float32))
    labeler.set_image(np.zeros((32, 32, 3), dtype=np.uint8))
    with pytest.raises(FreelabelError, match="non-empty"):
        labeler.segment([])
    with pytest.raises(ValueError, match="unknown method"):
        LabelerConfig(method="magic")


@pytest.mark.parametrize("backend", ["torch", "pydensecrf"])
def test_segment_keeps_its_work_on_the_labelers_device(device, backend, monkeypatch):
    import freelabel.pseudo.labeler

    torch.manual_seed(0)
    clip = load_clip("test-tiny-vit", "random", device=device)
    seen = []
    refine = freelabel.pseudo.labeler.refine

    def spy(probabilities, images, config, valid=None):  # what the CRF is handed, and where
        seen.append((probabilities.device.type, images.device.type, tuple(probabilities.shape)))
        return refine(probabilities, images, config, valid)

    monkeypatch.setattr(freelabel.pseudo.labeler, "refine", spy)
    labeler = Labeler(clip, config=LabelerConfig().with_overrides(crf_backend=backend))
    scene = next(scenes(4, 1))
    labeler.set_image(scene.image)
    result = labeler.segment(scene.labels)
    k, (h, w) = len(scene.labels), scene.image.shape[:2]
    assert seen == [(torch.device(device).type, torch.device(device).type, (1, k + 1, h, w))]
    assert result.mask.shape == (h, w) and np.allclose(result.probabilities.sum(axis=0), 1, atol=1e-4)
