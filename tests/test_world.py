import numpy as np
import pytest

from freelabel.toy.world import (CLASS_NAMES, CLASSES, ToyWorldConfig, class_by_name, clips, render_scene, scene_rng,
                                 scenes)


def test_class_set_has_named_combinations_of_all_attributes():
    assert len(CLASS_NAMES) >= 12 and len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    assert "red circle" in CLASS_NAMES and "striped blue square" in CLASS_NAMES
    for attribute in ("colour", "shape", "texture"):
        assert len({getattr(c, attribute) for c in CLASSES}) >= 2
    assert class_by_name("striped green triangle").shape == "triangle"
    with pytest.raises(KeyError, match="known labels"):
        class_by_name("purple star")


def test_same_seed_same_scene_and_different_seeds_differ():
    a, b = render_scene(scene_rng(3, 7)), render_scene(scene_rng(3, 7))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.labels == b.labels and a.caption == b.caption
    c = render_scene(scene_rng(4, 7))
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("size", [48, 64, 96])
def test_scene_masks_match_labels(size):
    config = ToyWorldConfig(image_size=size)
    for scene in scenes(11, 25, config):
        assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
        assert scene.mask.shape == (size, size) and scene.mask.dtype == np.uint8
        present = sorted(set(np.unique(scene.mask).tolist()) - {0})
        assert 255 not in present
        assert sorted(CLASS_NAMES.index(label) + 1 for label in scene.labels) == present
        assert config.min_objects <= len(scene.labels) <= config.max_objects
        for label in scene.labels:
            assert label in scene.caption
            # no object is hidden below min_visible of its own footprint: at least a few pixels each
            assert (scene.mask == CLASS_NAMES.index(label) + 1).sum() >= 0.45 * np.pi * (0.28 * size / 2) ** 2 * 0.5


def test_object_count_and_world_config_errors():
    assert all(len(s.labels) == 1 for s in scenes(0, 10, n_objects=1))
    with pytest.raises(ValueError):
        ToyWorldConfig(image_size=8)
    with pytest.raises(ValueError):
        ToyWorldConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError):
        ToyWorldConfig(object_scale=(0.5, 0.2))


def test_scenes_have_varied_backgrounds_and_foreground():
    fractions = [(s.mask > 0).mean() for s in scenes(5, 30)]
    assert 0.05 < np.mean(fractions) < 0.6
    corners = np.array([s.image[0, 0] for s in scenes(5, 30)], dtype=float)
    assert corners.std(axis=0).mean() > 10  # backgrounds differ from scene to scene


def test_clips_move_objects_smoothly_with_per_frame_masks():
    config = ToyWorldConfig(clip_frames=16)
    clip = next(clips(2, 1, config))
    assert clip.frames.shape == (16, 64, 64, 3) and clip.masks.shape == (16, 64, 64)
    for mask, labels in zip(clip.masks, clip.frame_labels):
        assert sorted(CLASS_NAMES.index(label) + 1 for label in labels) == sorted(set(np.unique(mask).tolist()) - {0})
        assert set(labels) <= set(clip.labels)
    changed = [(a != b).mean() for a, b in zip(clip.masks[:-1], clip.masks[1:])]
    assert max(changed) > 0  # something moves
    assert max(changed) < 0.25  # but smoothly: no frame-to-frame jump replaces a quarter of the picture
    again = next(clips(2, 1, config))
    assert np.array_equal(clip.frames, again.frames)
