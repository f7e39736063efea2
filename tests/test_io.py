import numpy as np
import pytest

from freelabel.errors import FreelabelError
from freelabel.io import (ImageReadError, atomic_path, list_images, read_classes, read_image, read_label_vocabulary,
                          read_mask, write_classes, write_image, write_mask)


def test_image_and_mask_round_trip(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    write_image(tmp_path / "a.png", image)
    assert np.array_equal(read_image(tmp_path / "a.png"), image)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:10] = 7
    mask[0, 0] = 255
    write_mask(tmp_path / "m.png", mask)
    assert np.array_equal(read_mask(tmp_path / "m.png"), mask)


def test_corrupt_and_missing_images_raise_a_clear_error(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    write_image(tmp_path / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ImageReadError, match="not a class-index"):
        read_mask(tmp_path / "rgb.png")


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_classes_and_vocabulary(tmp_path):
    write_classes(tmp_path / "classes.txt", ["background", "red circle", "cat"])
    assert read_classes(tmp_path / "classes.txt") == ["background", "red circle", "cat"]
    assert read_label_vocabulary(str(tmp_path / "classes.txt")) == ["red circle", "cat"]
    (tmp_path / "words.txt").write_text("dog\n# comment\nhot air balloon\ndog\n")
    assert read_label_vocabulary(str(tmp_path / "words.txt")) == ["dog", "hot air balloon"]
    assert read_label_vocabulary("cat, dog ,cat") == ["cat", "dog"]
    with pytest.raises(FreelabelError, match="does not exist"):
        read_label_vocabulary(str(tmp_path / "nope.txt"))
    (tmp_path / "gap.txt").write_text("0 background\n2 cat\n")
    with pytest.raises(FreelabelError, match="without gaps"):
        read_classes(tmp_path / "gap.txt")


def test_list_images_is_recursive_and_sorted(tmp_path):
    for name in ("b/2.jpg", "a.png", "b/1.PNG", "notes.txt", ".hidden.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [str(p) for p in list_images(tmp_path)] == ["a.png", "b/1.PNG", "b/2.jpg"]


def test_real_dataset_images_and_masks_read(shared_datasets):
    root = shared_datasets / "coco-object-val"
    names = read_classes(root / "classes.txt")
    assert len(names) == 81 and names[0] == "background"
    image_path = sorted((root / "images").iterdir())[0]
    image = read_image(image_path)
    mask = read_mask(root / "masks" / (image_path.stem + ".png"))
    assert image.shape[:2] == mask.shape and image.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= set(range(81)) | {255}


def test_classes_may_name_the_ignore_value(tmp_path):
    (tmp_path / "classes.txt").write_text("# comment\n0 background\n1 cat\n255 unlabeled\n")
    assert read_classes(tmp_path / "classes.txt") == ["background", "cat"]
