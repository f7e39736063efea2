"""Batches across images: ``segment_batch`` of the ``Labeler`` and the ``Segmenter`` gives per image what
``set_image`` + ``segment`` give (masks to the byte on CPU), with the encoder and the CRF run once per size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import freelabel.pseudo.labeler
from freelabel.clip.loading import load_clip
from freelabel.errors import FreelabelError
from freelabel.pseudo.config import LabelerConfig
from freelabel.pseudo.labeler import Labeler
from freelabel.segmenter.factory import architecture_config, create_segmenter
from freelabel.segmenter.predictor import Segmenter
from freelabel.toy.world import scenes

LABELS = ["red circle", "blue square", "green triangle", "striped circle"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_clip("test-tiny-vit", "random")


def _image_set(scale: int) -> list[np.ndarray]:
    """Two scenes of one size, one of another, then a third of the first size; ``scale`` x the toy's 64 px."""
    first, second, third, fourth = (scene.image.repeat(scale, 0).repeat(scale, 1) for scene in scenes(11, 4))
    other = np.ascontiguousarray(np.concatenate([second, third])[40 * scale:88 * scale])
    return [first, other, third, fourth]


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """64 x 64 and 48 x 64 toy scenes."""
    return _image_set(1)


# label maps are stacked along the label axis for images of one size; PyTorch's CPU bilinear resize of outputs up
# to 128 px in H + W vectorises across those planes, so a map's last bits may depend on its place in the stack
# (larger outputs, every real image, go through a kernel that is plane by plane): both regimes are tested
LABELER_IMAGE_SETS = {"toy": (1, None), "larger": (2, 96)}  # image scale, the labeler's input_size
# per image its own labels, of different counts within each size
IMAGE_LABELS = [LABELS[:1], LABELS[1:4], LABELS[:3], ["blue square", "red circle"]]


def _one_by_one(model, images, labels):
    results = []
    for image, image_labels in zip(images, labels):
        model.set_image(image)
        results.append(model.segment(image_labels))
    return results


def _assert_same(batch, single, device="cpu"):
    """On the CPU masks to the byte and scores within 1e-5; on a GPU (whose kernels differ by batch size) scores
    within 1e-4 and masks on all but 0.1% of pixels."""
    tolerance = 1e-5 if device == "cpu" else 1e-4
    assert len(batch) == len(single)
    for b, s in zip(batch, single):
        assert b.labels == s.labels
        assert b.mask.dtype == s.mask.dtype == np.uint8 and b.mask.shape == s.mask.shape
        if device == "cpu":
            assert b.mask.tobytes() == s.mask.tobytes()
        else:
            assert (b.mask != s.mask).mean() <= 1e-3
        assert b.probabilities.shape == s.probabilities.shape and b.scores.shape == s.scores.shape
        np.testing.assert_allclose(b.probabilities, s.probabilities, rtol=0, atol=tolerance)
        np.testing.assert_allclose(b.scores, s.scores, rtol=0, atol=tolerance)
        if s.label_scores is None:
            assert b.label_scores is None
        else:
            np.testing.assert_allclose(b.label_scores, s.label_scores, rtol=0, atol=tolerance)


@pytest.mark.parametrize("settings", [
    dict(crf_backend="torch", background_words=("sky",)),
    dict(crf_backend="pydensecrf"),
    dict(use_crf=False, scales=(1.0, 1.5), window=40),  # views cut into sliding-window crops
    dict(crf_backend="torch", method="relevance", scales=(1.0,)),  # encoder per image and label
    dict(crf_backend="torch", method="naclip", use_pamr=True, pamr_dilations=(1, 2)),  # PAMR, then the CRF
])
@pytest.mark.parametrize("image_set", LABELER_IMAGE_SETS)
def test_labeler_batch_equals_one_by_one(tiny, image_set, settings, device, monkeypatch):
    scale, input_size = LABELER_IMAGE_SETS[image_set]
    images = _image_set(scale)
    if device != "cpu":
        torch.manual_seed(0)
        tiny = load_clip("test-tiny-vit", "random", device=device)
    labeler = Labeler(tiny, config=LabelerConfig(input_size=input_size).with_overrides(**settings))
    single = _one_by_one(labeler, images, IMAGE_LABELS)
    encoder_batches, crf_batches = [], []
    forward, refine = labeler.encoder.forward, freelabel.pseudo.labeler.refine
    labeler.encoder.forward = lambda crops: encoder_batches.append(tuple(crops.shape)) or forward(crops)
    monkeypatch.setattr(freelabel.pseudo.labeler, "refine",
                        lambda *args: crf_batches.append(tuple(args[0].shape)) or refine(*args))
    batch = labeler.segment_batch(images, IMAGE_LABELS)
    _assert_same(batch, single, device)
    if labeler.config.method != "relevance":  # one encoder call per crop size, holding every image's crops of it
        sizes = [shape[-2:] for shape in encoder_batches]
        assert len(sizes) == len(set(sizes)) and sum(shape[0] for shape in encoder_batches) == sum(
            len(view.crops) for image in labeler._encode(images) for view in image.views)
        assert max(shape[0] for shape in encoder_batches) >= 6  # three same-size images, two flips each
    if labeler.config.crf is not None:  # one CRF call per image size, padded to its most labels (+ background)
        assert sorted(crf_batches) == [(1, 4, *images[1].shape[:2]), (3, 4, *images[0].shape[:2])]


def test_labeler_batch_leaves_the_cached_image(tiny, images):
    labeler = Labeler(tiny, config=LabelerConfig(crf=None))
    labeler.set_image(images[1])
    before = labeler.segment(["red circle"])
    labeler.segment_batch(images[:1], [["blue square"]])
    assert labeler.segment(["red circle"]).mask.tobytes() == before.mask.tobytes()
    with pytest.raises(FreelabelError, match="set_image"):
        Labeler(tiny).segment(["red circle"])


@pytest.fixture(scope="module")
def segmenter(tiny):
    torch.manual_seed(1)  # random heads: the test compares paths, not quality
    model = create_segmenter(tiny, architecture_config("rankseg-small"))
    return Segmenter(model, tiny, vocabulary=LABELS + ["yellow star", "purple ring"], input_size=32,
                     ignore_threshold=0.3)


def test_segmenter_batch_equals_one_by_one(segmenter, images):
    labels = [IMAGE_LABELS[0], [], IMAGE_LABELS[2], []]  # given, and the model's own choice
    single = _one_by_one(segmenter, images, labels)
    encoded = []
    encode = segmenter.model.encode
    segmenter.model.encode = lambda x: encoded.append(tuple(x.shape)) or encode(x)
    try:
        batch = segmenter.segment_batch(images, labels)
    finally:
        del segmenter.model.encode
    _assert_same(batch, single)
    assert sorted(encoded) == [(1, 3, 32, 40), (3, 3, 32, 32)]  # one encode per input size
    again = segmenter.segment_batch(images, labels, top_k=1)
    assert all(len(result.labels) == 1 for result in again)


@pytest.mark.parametrize("bad", [np.zeros((48, 48, 3), np.float32), np.zeros((48, 48), np.uint8),
                                 np.zeros((0, 48, 3), np.uint8), "image.png"])
@pytest.mark.parametrize("make", ["labeler", "segmenter"])
def test_a_bad_image_raises_what_set_image_raises(tiny, segmenter, images, bad, make):
    model = Labeler(tiny) if make == "labeler" else segmenter
    with pytest.raises(ValueError) as single:
        model.set_image(bad)
    with pytest.raises(ValueError) as batch:
        model.segment_batch([images[0], bad], [["red circle"], ["red circle"]])
    assert str(batch.value) == str(single.value)


@pytest.mark.parametrize("make", ["labeler", "segmenter"])
def test_batch_label_errors(tiny, segmenter, images, make):
    model = Labeler(tiny) if make == "labeler" else segmenter
    with pytest.raises(FreelabelError, match="one label list per image"):
        model.segment_batch(images[:2], [["red circle"]])
    with pytest.raises(FreelabelError, match="non-empty strings"):
        model.segment_batch(images[:2], ["red circle", "blue square"])  # a flat list: strings, not lists
    with pytest.raises(FreelabelError, match="non-empty strings"):
        model.segment_batch(images[:2], [["red circle"], [""]])
    assert model.segment_batch([], []) == []
