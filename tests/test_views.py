import math

import pytest
import torch

from freelabel.pseudo.fusion import fuse
from freelabel.pseudo.views import plan_views, view_crops, view_to_image


def test_views_are_patch_multiples_with_flips_and_sliding_windows():
    views = plan_views(375, 500, base_size=448, scales=(1.0, 1.5), flip=True, patch=16, window=448)
    assert len(views) == 4 and [v.flip for v in views] == [False, True, False, True]
    for view in views:
        assert view.size[0] % 16 == 0 and view.size[1] % 16 == 0
        assert all(y + view.window[0] <= view.size[0] and x + view.window[1] <= view.size[1] for y, x in view.crops)
        covered = torch.zeros(view.size)
        for y, x in view.crops:
            covered[y:y + view.window[0], x:x + view.window[1]] = 1
        assert covered.all()  # crops tile the whole view
    assert views[0].size == (448, 592) and len(views[0].crops) == 2
    assert views[2].size == (672, 896) and len(views[2].crops) == 2 * 3
    with pytest.raises(ValueError):
        plan_views(10, 10, 32, (), True, 8, None)


def test_crops_and_stitching_invert_each_other():
    image = torch.arange(3 * 40 * 56, dtype=torch.float32).view(3, 40, 56) / 1000
    views = plan_views(40, 56, base_size=32, scales=(1.0, 1.5), flip=True, patch=8, window=32)
    for view, crops in zip(views, view_crops(image, views), strict=True):
        assert crops.shape == (len(view.crops), 3, *view.window)
        back = view_to_image(crops, view, (40, 56))
        assert back.shape == (3, 40, 56)
        # resampling blurs a little, but the flip and the crop positions must be undone exactly
        assert (back - image).abs().mean() < 0.03 * image.abs().mean()
        coarse = view_to_image(crops, view, (10, 14))  # any grid over the image, e.g. the fusion grid
        assert coarse.shape == (3, 10, 14)
        assert (coarse - image[:, 2::4, 2::4]).abs().mean() < 0.05 * image.abs().mean()


def test_fusion_modes():
    maps = torch.tensor([[[[0.0]]], [[[1.0]]]])  # two views, one label, one pixel
    assert fuse(maps, "mean").item() == pytest.approx(0.5)
    assert fuse(maps, "max").item() == pytest.approx(1.0)
    soft = fuse(maps, "softmin", temperature=0.1).item()
    assert 0.0 < soft < 0.5  # below the mean, above the minimum
    assert fuse(maps, "softmin", temperature=1e-3).item() == pytest.approx(math.log(2) * 1e-3, abs=1e-4)
    assert fuse(maps, "softmin", temperature=100).item() == pytest.approx(0.5, abs=1e-2)
    with pytest.raises(ValueError):
        fuse(maps, "median")
    with pytest.raises(ValueError):
        fuse(maps, "softmin", temperature=0)


@pytest.mark.parametrize("height, width", [(20, 20000), (20000, 20), (1, 5000)])
def test_extreme_aspect_ratios_give_bounded_views(height, width):
    views = plan_views(height, width, 224, (1.0, 1.5), True, 16, None)
    assert all(max(v.size) <= 4 * 224 * 1.5 and min(v.size) >= 16 for v in views)
    assert views[0].size[0] < views[0].size[1] if width > height else views[0].size[0] > views[0].size[1]


def test_ordinary_images_keep_the_short_side_at_the_base_size():
    assert plan_views(480, 640, 224, (1.0,), False, 16, None)[0].size == (224, 304)
