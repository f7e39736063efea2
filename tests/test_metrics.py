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
