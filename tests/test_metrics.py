import numpy as np
import pytest

from freelabel.metrics import average_precision


def test_average_precision_known_values():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.3, 0.6], [0.1, 0.2]])
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 0]], dtype=bool)
    ap = average_precision(scores, targets)
    # class 0: positives ranked 1st and 3rd -> (1/1 + 2/3) / 2; class 1: its only positive ranked 1st -> 1
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2) and ap[1] == pytest.approx(1.0)


def test_average_precision_no_positive_is_nan_and_shapes_checked():
    ap = average_precision(np.zeros((3, 2)), np.array([[1, 0], [0, 0], [0, 0]], dtype=bool))
    assert ap[0] == pytest.approx(1 / 1) and np.isnan(ap[1])
    with pytest.raises(ValueError):
        average_precision(np.zeros((3, 2)), np.zeros((3, 3), dtype=bool))


def test_confusion_matrix_iou_by_hand():
    from freelabel.metrics import ConfusionMatrix

    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 255]], dtype=np.uint8)
    prediction = np.array([[0, 1, 1, 1], [0, 0, 255, 1]], dtype=np.uint8)
    matrix = ConfusionMatrix(2)
    matrix.update(prediction, truth)
    # class 0: tp 3, gt 4, pred 3 -> 3/4; class 1: tp 2, gt 3, pred 3 -> 2/4 (the ignored pixel is a miss)
    assert matrix.iou() == pytest.approx([0.75, 0.5])
    assert matrix.miou() == pytest.approx(0.625)
    assert matrix.pixel_accuracy() == pytest.approx(5 / 7)
    assert matrix.ignored_fraction() == pytest.approx(1 / 7)
    with pytest.raises(ValueError):
        matrix.update(prediction[:1], truth)
    with pytest.raises(ValueError, match="only 2 classes"):
        matrix.update(prediction, truth + 5)


def test_confusion_matrix_counts_a_class_outside_the_list_as_wrong_and_rejects_other_values():
    from freelabel.metrics import ConfusionMatrix

    truth = np.array([[0, 1, 1]], dtype=np.uint8)
    matrix = ConfusionMatrix(2)
    matrix.update(np.array([[0, 2, 1]]), truth)  # 2 = a class outside the list: a miss of class 1
    assert matrix.counts.tolist() == [[1, 0, 0], [0, 1, 1]]
    assert matrix.iou() == pytest.approx([1.0, 0.5])
    with pytest.raises(ValueError, match="prediction holds class 3"):
        matrix.update(np.array([[0, 3, 1]]), truth)
