import numpy as np
import pytest

from freelabel.errors import FreelabelError
from freelabel.io import (ImageReadError, atomic_path, list_images, read_classes, read_image, read_label_vocabulary,
                          read_mask, write_classes, write_image, write_mask)
from freelabel.io.labels import LabelError, check_label, read_image_labels


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


# --- label files and label checks (freelabel.io.labels) ---

def _labels_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def test_csv_labels_with_a_utf8_bom_header(tmp_path):
    spec = _labels_file(tmp_path, "labels.csv", "\ufeffimage,labels\r\na.png,cat|dog\r\nb.png,bird\r\n")
    assert read_image_labels(spec) == {"a.png": ["cat", "dog"], "b.png": ["bird"]}


def test_csv_quoted_labels_may_contain_commas_and_separators(tmp_path):
    spec = _labels_file(tmp_path, "labels.csv",
                        '"a.png","cat|dog, sitting"\nb.png, "red, round;ball"\nc.png,cat;;cat| \n')
    assert read_image_labels(spec) == {"a.png": ["cat", "dog, sitting"], "b.png": ["red, round", "ball"],
                                       "c.png": ["cat"]}


def test_csv_header_blank_lines_and_comments(tmp_path):
    spec = _labels_file(tmp_path, "labels.csv",
                        'Image , LABELS\n\n# a comment, with "a quote\n  \nimage.png,cat\n# end\n')
    assert read_image_labels(spec) == {"image.png": ["cat"]}
    # "image,labels" is a header only on the first row; a first row that is data stays data
    spec = _labels_file(tmp_path, "noheader.csv", "a.png,cat\nb.png,dog\n")
    assert read_image_labels(spec) == {"a.png": ["cat"], "b.png": ["dog"]}


def test_csv_unclosed_quote_names_its_line(tmp_path):
    spec = _labels_file(tmp_path, "labels.csv", 'image,labels\na.png,cat\nb.png,"dog|bird\nc.png,fish\nd.png,x\n')
    with pytest.raises(FreelabelError, match=r"labels\.csv:3: a quote opened in this row is never closed"):
        read_image_labels(spec)
    # closed only by a quote further down: rows were swallowed into one field
    spec = _labels_file(tmp_path, "swallow.csv", 'a.png,"dog\nb.png,bird"\nc.png,fish\n')
    with pytest.raises(FreelabelError, match=r"swallow\.csv:1: a quoted field in this row runs on to line 2"):
        read_image_labels(spec)
    spec = _labels_file(tmp_path, "stray.csv", 'a.png,cat\nb.png,"dog"s\n')
    with pytest.raises(FreelabelError, match=r"stray\.csv:2: malformed CSV"):
        read_image_labels(spec)


def test_csv_wrong_number_of_columns_names_its_line(tmp_path):
    spec = _labels_file(tmp_path, "labels.csv", "image,labels\n\na.png,cat\nb.png,sitting dog, cat\n")
    with pytest.raises(FreelabelError) as error:
        read_image_labels(spec)
    message = str(error.value)
    assert "labels.csv:4: expected 2 columns (image,labels), found 3: ['b.png', 'sitting dog', 'cat']" in message
    assert "quote labels that contain commas" in message
    spec = _labels_file(tmp_path, "one.csv", "a.png,cat\nb.png\n")
    with pytest.raises(FreelabelError, match=r"one\.csv:2: expected 2 columns \(image,labels\), found 1"):
        read_image_labels(spec)


def test_csv_image_listed_twice_names_both_lines(tmp_path):
    spec = _labels_file(tmp_path, "labels.csv", "image,labels\na.png,cat\nb.png,dog\n a.png ,bird\n")
    with pytest.raises(FreelabelError, match=r"labels\.csv:4: image 'a\.png' is listed twice, on lines 2 and 4"):
        read_image_labels(spec)


def test_csv_that_is_empty_or_not_utf8(tmp_path):
    with pytest.raises(FreelabelError, match="lists no images"):
        read_image_labels(_labels_file(tmp_path, "labels.csv", "image,labels\n# nothing yet\n"))
    (tmp_path / "utf16.csv").write_bytes("a.png,cat\n".encode("utf-16"))
    with pytest.raises(FreelabelError, match="not UTF-8"):
        read_image_labels(str(tmp_path / "utf16.csv"))


def test_json_structural_errors_name_the_image(tmp_path):
    cases = {'["a.png"]': r"must map each image path to a list of label strings \(a JSON object\), not a list",
             '{"a.png": ["cat"], "b/c.png": "dog"}': r"image 'b/c\.png' must map to a list of label strings, not a "
                                                     r"string",
             '{"a.png": ["cat", 3]}': r"image 'a\.png' must map to a list of label strings; item 1 is a number",
             '{"a.png": ["cat"], "a.png": ["dog"]}': r"image 'a\.png' appears twice",
             '{"a.png": ["cat"]': "cannot read JSON"}
    for text, message in cases.items():
        spec = _labels_file(tmp_path, "labels.json", text)
        with pytest.raises(FreelabelError, match=message):
            read_image_labels(spec)


def test_readers_pass_bad_labels_on_stripped(tmp_path):
    spec = _labels_file(tmp_path, "labels.json",
                        '\ufeff{"a.png": [" cat ", "cat", "", "Background", "x\\ty"], "b.png": []}')
    assert read_image_labels(spec) == {"a.png": ["cat", "", "Background", "x\ty"], "b.png": []}
    spec = _labels_file(tmp_path, "labels.csv", 'a.png,"background| cat\u2028dog |cat"\n')
    assert read_image_labels(spec) == {"a.png": ["background", "cat\u2028dog", "cat"]}
    spec = _labels_file(tmp_path, "words.txt", "\ufeffcat\ncat\u2028dog\n background \ncat\n")
    assert read_label_vocabulary(spec) == ["cat", "cat\u2028dog", "background"]
    assert read_image_labels(spec) == ["cat", "cat\u2028dog", "background"]


@pytest.mark.parametrize("text, problem", [
    ("", "is empty"), ("   ", "is empty"), ("\u2028", "is empty"),
    ("cat\ndog", r"contains '\\n'"), ("cat\tdog", r"contains '\\t'"), ("\x00", r"contains '\\x00'"),
    ("cat\u2028dog", r"contains '\\u2028'"), ("\ufeffcat", r"contains '\\ufeff'"), ("cat\u202edog", "U\\+202E"),
    ("x" * 201, "is 201 characters long; at most 200"), ("Background", "reserved"), (" BACKGROUND ", "reserved"),
])
def test_check_label_rejects_each_bad_kind(text, problem):
    with pytest.raises(LabelError, match=problem) as error:
        check_label(text)
    assert isinstance(error.value, FreelabelError)
    assert repr(text)[:20] in str(error.value)


@pytest.mark.parametrize("text, label", [
    (" cat ", "cat"), ("chat noir", "chat noir"), ("Straße", "Straße"), ("hot air balloon", "hot air balloon"),
    ("x" * 200, "x" * 200), ("background music", "background music"),
    ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"),
])
def test_check_label_returns_good_labels_stripped(text, label):
    assert check_label(text) == label
