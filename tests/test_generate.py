import json

import numpy as np
import pytest
from click.testing import CliRunner

from freelabel.pipelines.cli import main
from freelabel.errors import FreelabelError
from freelabel.io import read_classes, read_image_labels, read_mask, write_classes, write_image, write_mask
from freelabel.pseudo.labeler import Labeler
from freelabel.toy.world import BACKGROUND, CLASS_NAMES, scenes

TINY = ["--model", "test-tiny-vit", "--pretrained", "random", "--no-crf"]


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    labels = {}
    for i, scene in enumerate(scenes(6, 3)):
        name = f"set{i % 2}/{i}.png"
        write_image(images / name, scene.image)
        labels[name] = scene.labels
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    return tmp_path


def _generate(folder, *extra):
    return CliRunner().invoke(main, ["generate", str(folder / "images"), "--labels", str(folder / "labels.json"),
                                     "--out", str(folder / "out"), *TINY, *extra])


def test_generate_writes_masks_index_and_manifest(folder):
    result = _generate(folder, "--save-scores")
    assert result.exit_code == 0, result.output
    out = folder / "out"
    classes = read_classes(out / "classes.txt")
    labels = json.loads((folder / "labels.json").read_text())
    assert classes[0] == "background" and set(classes[1:]) == {n for v in labels.values() for n in v}
    for name, names in labels.items():
        mask = read_mask(out / name)
        allowed = {0, 255} | {classes.index(n) for n in names}
        assert set(np.unique(mask).tolist()) <= allowed
        scores = np.load(out / "scores" / name.replace(".png", ".npz"))
        assert scores["probabilities"].dtype == np.float16 and list(scores["labels"]) == ["background", *names]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["done"] == 3 and manifest["labeler"]["crf"] is None
    assert manifest["preset"]["source"]["name"] == "default" and manifest["config"]["overrides"]["use_crf"] is False
    assert "torch" in manifest["versions"] and all(v["status"] == "done" for v in manifest["images"].values())


def test_rerun_skips_finished_images_unless_overwrite(folder, monkeypatch):
    assert _generate(folder).exit_code == 0
    prepared = []
    prepare_labels = Labeler.prepare_labels
    monkeypatch.setattr(Labeler, "prepare_labels",
                        lambda self, labels: prepared.append(list(labels)) or prepare_labels(self, labels))
    assert "0 masks written, 3 skipped" in _generate(folder).output
    assert prepared == [[]]  # nothing left to do: no label is encoded
    assert "3 masks written" in _generate(folder, "--overwrite").output


def test_killed_run_resumes_without_partial_files(folder, monkeypatch):
    segment = Labeler.segment
    calls = []

    def dies_on_second(self, labels):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return segment(self, labels)

    monkeypatch.setattr(Labeler, "segment", dies_on_second)
    result = _generate(folder)
    assert result.exit_code != 0
    written = sorted(p.name for p in (folder / "out").rglob("*") if p.is_file())
    assert not [n for n in written if n.startswith(".")]  # no temporary files left behind
    assert len([n for n in written if n.endswith(".png")]) == 1
    monkeypatch.setattr(Labeler, "segment", segment)
    assert "2 masks written, 1 skipped" in _generate(folder).output


def test_corrupt_image_is_reported_and_skipped(folder):
    (folder / "images" / "broken.png").write_bytes(b"not a png at all")
    labels = json.loads((folder / "labels.json").read_text())
    labels["broken.png"] = ["red circle"]
    (folder / "labels.json").write_text(json.dumps(labels))
    result = _generate(folder)
    assert result.exit_code == 1 and "3 masks written" in result.output and "1 failed" in result.output
    assert "errors.jsonl" in result.output
    manifest = json.loads((folder / "out" / "manifest.json").read_text())
    assert manifest["images"]["broken.png"]["status"] == "failed"
    errors = [json.loads(line) for line in (folder / "out" / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["path"].endswith("broken.png") and errors[0]["stage"] == "read"


def test_labels_from_csv_and_shared_list(tmp_path):
    (tmp_path / "labels.csv").write_text("image,labels\na.png,cat|dog\nb/c.jpg,hot air balloon\n")
    assert read_image_labels(str(tmp_path / "labels.csv")) == {"a.png": ["cat", "dog"], "b/c.jpg": ["hot air balloon"]}
    assert read_image_labels("cat,dog") == ["cat", "dog"]
    (tmp_path / "bad.json").write_text(json.dumps({"a.png": "cat"}))
    with pytest.raises(FreelabelError, match="list of label strings"):
        read_image_labels(str(tmp_path / "bad.json"))


def test_labels_that_name_no_image_are_an_error(folder):
    (folder / "labels.json").write_text(json.dumps({"elsewhere/x.png": ["cat"]}))
    result = _generate(folder)
    assert result.exit_code == 2 and "none of the images" in result.output


def test_evaluate_table_and_json(folder):
    root, gt = folder, folder / "gt"
    for i, scene in enumerate(scenes(6, 3)):
        write_mask(gt / f"set{i % 2}/{i}.png", scene.mask)
    write_classes(root / "classes.txt", [BACKGROUND, *CLASS_NAMES])
    # the ground truth scored against itself is perfect
    perfect = CliRunner().invoke(main, ["evaluate", "--pred", str(gt), "--gt", str(gt), "--classes",
                                        str(root / "classes.txt"), "--json"])
    assert perfect.exit_code == 0, perfect.output
    assert json.loads(perfect.output)["miou"] == 1.0
    assert _generate(root).exit_code == 0
    result = CliRunner().invoke(main, ["evaluate", "--pred", str(root / "out"), "--gt", str(gt), "--classes",
                                       str(root / "classes.txt")])
    assert result.exit_code == 0 and "mIoU" in result.output and "images: 3" in result.output


@pytest.mark.parametrize("inside", [".", "masks"])
def test_an_output_folder_inside_the_images_is_refused(folder, inside):
    out = folder / "images" / inside
    before = sorted(p.name for p in (folder / "images").rglob("*"))
    result = CliRunner().invoke(main, ["generate", str(folder / "images"), "--labels", str(folder / "labels.json"),
                                       "--out", str(out), *TINY])
    assert result.exit_code == 2 and "inside the image folder" in result.output
    assert sorted(p.name for p in (folder / "images").rglob("*")) == before


def test_a_rerun_with_one_images_labels_changed_is_refused_unless_overwrite(folder):
    assert _generate(folder).exit_code == 0
    labels = json.loads((folder / "labels.json").read_text())
    first, second = sorted(labels)[:2]
    labels[first], labels[second] = labels[second], labels[first]  # same classes, in the same first order or not
    labels[first] = list(dict.fromkeys([*labels[first], *labels[second]]))
    (folder / "labels.json").write_text(json.dumps(labels))
    refused = _generate(folder)
    assert refused.exit_code == 2 and "another job" in refused.output and "image labels" in refused.output
    assert _generate(folder, "--overwrite").exit_code == 0
    manifest = json.loads((folder / "out" / "manifest.json").read_text())
    assert manifest["images"][first]["labels"] == labels[first]
