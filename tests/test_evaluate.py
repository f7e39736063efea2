"""``freelabel evaluate`` on tiny hand-made folders: expected IoUs are worked out by hand in the comments."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from freelabel.errors import FreelabelError
from freelabel.io import write_classes, write_mask
from freelabel.pipelines.evaluate import evaluate, format_report

CLASSES = ["background", "cat", "dog"]


def _mask(rows) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


def _write_scores(path: Path, argmax: np.ndarray, labels: list[str]) -> None:
    """A score file as ``freelabel generate --save-scores`` writes it (freelabel/run/job.py): float16
    probabilities (K+1, H, W) over ``labels`` (background first, then the image's labels), whose argmax is
    ``argmax`` (H, W) local label indices."""
    probabilities = np.full((len(labels), *argmax.shape), 0.1)
    np.put_along_axis(probabilities, argmax[None].astype(np.int64), 0.8, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez_compressed(handle, probabilities=probabilities.astype(np.float16), labels=np.array(labels))


@pytest.fixture
def folders(tmp_path):
    """Empty prediction and ground-truth folders and the ground truth's classes.txt (background, cat, dog)."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    write_classes(tmp_path / "classes.txt", CLASSES)
    return pred, gt, tmp_path / "classes.txt"


def test_miou_counts_ignore_as_wrong_and_dense_miou_comes_from_the_scores(folders):
    pred, gt, classes = folders
    write_mask(gt / "a.png", _mask([[0, 0, 1, 1], [0, 2, 2, 255]]))
    write_mask(pred / "a.png", _mask([[0, 255, 1, 1], [0, 2, 255, 1]]))
    # the image's own label order is dog, cat: local 1 = dog (2), local 2 = cat (1). In ground-truth indices the
    # argmax is [[0, 1, 1, 1], [0, 2, 2, -]]; the last pixel is unlabelled in the ground truth.
    _write_scores(pred / "scores" / "a.npz", _mask([[0, 2, 2, 2], [0, 1, 1, 0]]), ["background", "dog", "cat"])
    report = evaluate(pred, gt, classes)
    # 7 labelled pixels. Mask, ignore counted wrong:
    #   background: tp 2 (of 3 true; the 255 at (0,1) is a miss), predicted 2 -> 2/3
    #   cat: tp 2, true 2, predicted 2 on labelled pixels -> 1
    #   dog: tp 1, true 2 (the 255 at (1,2) is a miss), predicted 1 -> 1/2
    assert report["iou"] == pytest.approx([2 / 3, 1.0, 1 / 2], abs=1e-4)
    assert report["miou"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3, abs=1e-4)
    assert report["ignored_fraction"] == pytest.approx(2 / 7, abs=1e-4)
    assert report["pixel_accuracy"] == pytest.approx(5 / 7, abs=1e-4)
    # Dense argmax: background tp 2, true 3, predicted 2 -> 2/3; cat tp 2, true 2, predicted 3 (it takes (0,1)) ->
    # 2/3; dog tp 2, true 2, predicted 2 -> 1
    assert report["dense_miou"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3, abs=1e-4)
    assert report["dense_images"] == 1 and report["images"] == 1 and report["missing"] == []
    table = format_report(report)
    assert re.search(r"mIoU \(ignored = wrong\)\s+0\.7222", table)
    assert re.search(r"mIoU of the dense argmax \(from scores\)\s+0\.7778", table)
    assert re.search(r"ignored \(predicted 255\)\s+0\.2857", table)


def test_prediction_classes_and_score_labels_are_mapped_by_name(folders):
    pred, gt, classes = folders
    write_mask(gt / "sub" / "a.png", _mask([[0, 1, 2, 2]]))
    # the prediction's own index: 0 background, 1 dog, 2 cat, 3 zebra (not a ground-truth class: a wrong class)
    write_classes(pred / "classes.txt", ["background", "dog", "cat", "zebra"])
    write_mask(pred / "sub" / "a.png", _mask([[0, 2, 1, 3]]))  # = background, cat, dog, zebra
    _write_scores(pred / "scores" / "sub" / "a.npz", _mask([[0, 2, 1, 2]]), ["background", "zebra", "cat"])
    report = evaluate(pred, gt, classes)
    # mask: background 1/1, cat 1/1, dog tp 1 of 2 true (zebra took one), predicted 1 -> 1/2
    assert report["iou"] == pytest.approx([1.0, 1.0, 0.5], abs=1e-4)
    assert report["ignored_fraction"] == 0  # zebra is a wrong class, not an ignored pixel
    assert report["confusion"][2] == [0, 0, 1, 1]  # the dog pixel predicted zebra: the outside column
    # dense, in ground-truth terms [background, cat, zebra, cat]: background 1/1; cat tp 1, true 1, predicted 2
    # -> 1/2; dog tp 0 of 2 -> 0
    assert report["dense_miou"] == pytest.approx((1 + 0.5 + 0) / 3, abs=1e-4)


def test_dense_miou_is_none_unless_every_image_has_scores(folders):
    pred, gt, classes = folders
    for name in ("a", "b"):
        write_mask(gt / f"{name}.png", _mask([[0, 1]]))
        write_mask(pred / f"{name}.png", _mask([[0, 1]]))
    _write_scores(pred / "scores" / "a.npz", _mask([[0, 1]]), ["background", "cat"])
    report = evaluate(pred, gt, classes)
    assert report["miou"] == 1.0 and report["dense_miou"] is None and report["dense_images"] == 1
    assert "n/a (scores for 1 of 2 images)" in format_report(report)
    shutil.rmtree(pred / "scores")
    no_scores = evaluate(pred, gt, classes)
    assert no_scores["dense_miou"] is None and no_scores["dense_images"] == 0


def test_missing_predictions_are_an_error_naming_them_unless_allowed(folders):
    pred, gt, classes = folders
    for i in range(7):
        write_mask(gt / f"m{i}.png", _mask([[1, 1], [2, 255]]))
    write_mask(pred / "m0.png", _mask([[1, 1], [2, 255]]))
    with pytest.raises(FreelabelError, match=r"6 of 7 .* m1\.png, m2\.png, m3\.png, m4\.png, m5\.png, \.\.\."):
        evaluate(pred, gt, classes)
    report = evaluate(pred, gt, classes, allow_missing=True)
    assert report["missing"] == [f"m{i}.png" for i in range(1, 7)]
    # 21 labelled pixels, 18 of them in the 6 all-ignore images: cat tp 2 of 14 true -> 1/7, dog tp 1 of 7 -> 1/7
    assert report["iou"] == [None, pytest.approx(1 / 7, abs=1e-4), pytest.approx(1 / 7, abs=1e-4)]
    assert report["ignored_fraction"] == pytest.approx(18 / 21, abs=1e-4)


def test_a_prediction_of_another_size_names_both_files(folders):
    pred, gt, classes = folders
    write_mask(gt / "a.png", _mask([[0, 1, 2]]))
    write_mask(pred / "a.png", _mask([[0, 1]]))
    with pytest.raises(FreelabelError, match=re.escape(f"{pred / 'a.png'} is 2x1") + ".*" + re.escape(
            f"{gt / 'a.png'} is 3x1")):
        evaluate(pred, gt, classes)


def test_scores_of_another_size_name_the_score_file(folders):
    pred, gt, classes = folders
    write_mask(gt / "a.png", _mask([[0, 1, 2]]))
    write_mask(pred / "a.png", _mask([[0, 1, 2]]))
    _write_scores(pred / "scores" / "a.npz", _mask([[0, 1]]), ["background", "cat"])
    with pytest.raises(FreelabelError, match=re.escape(str(pred / "scores" / "a.npz"))):
        evaluate(pred, gt, classes)


def test_a_ground_truth_class_beyond_the_classes_file_names_both_files(folders):
    pred, gt, classes = folders
    write_mask(gt / "a.png", _mask([[0, 3]]))
    write_mask(pred / "a.png", _mask([[0, 1]]))
    with pytest.raises(FreelabelError, match=re.escape(f"{gt / 'a.png'} holds class 3 but {classes} lists only 3")):
        evaluate(pred, gt, classes)


@pytest.mark.parametrize("own_classes", [False, True])
def test_a_predicted_class_beyond_its_class_list_names_the_files(folders, own_classes):
    pred, gt, classes = folders
    write_mask(gt / "a.png", _mask([[0, 1]]))
    write_mask(pred / "a.png", _mask([[0, 7]]))
    listing = classes
    if own_classes:
        write_classes(pred / "classes.txt", ["background", "cat", "dog", "zebra"])
        listing = pred / "classes.txt"
    with pytest.raises(FreelabelError, match=re.escape(f"{pred / 'a.png'} holds class 7 but {listing} lists only")):
        evaluate(pred, gt, classes)


@pytest.mark.parametrize("broken", ["a.png", "scores/a.npz"])
def test_an_unreadable_file_is_named(folders, broken):
    pred, gt, classes = folders
    write_mask(gt / "a.png", _mask([[0, 1]]))
    write_mask(pred / "a.png", _mask([[0, 1]]))
    _write_scores(pred / "scores" / "a.npz", _mask([[0, 1]]), ["background", "cat"])
    (pred / broken).write_bytes(b"not a mask and not an npz")
    with pytest.raises(FreelabelError, match=re.escape(str(pred / broken))):
        evaluate(pred, gt, classes)
