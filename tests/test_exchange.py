"""Export to COCO, Label Studio, CVAT and Hugging Face image folders, and import back: every mask comes back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from freelabel.exchange import (export_coco, export_cvat, export_hf, export_labelstudio, import_coco, import_cvat,
                                import_labelstudio, read_label_folder)
from freelabel.io.labels import read_classes
from freelabel.io.masks import IGNORE_INDEX, read_mask
from labelfolders import CLASSES, make_label_folder


@pytest.fixture
def folder(tmp_path):
    return read_label_folder(make_label_folder(tmp_path))


def masks_of(folder):
    return {str(item.mask.relative_to(folder.root)): read_mask(item.mask) for item in folder.items}


def assert_same_masks(folder, imported, ignore_becomes=IGNORE_INDEX):
    assert read_classes(imported / "classes.txt") == folder.classes
    expected = masks_of(folder)
    assert sorted(str(p.relative_to(imported)) for p in imported.rglob("*.png")) == sorted(expected)
    for name, mask in expected.items():
        back = read_mask(imported / name)
        assert np.array_equal(back, np.where(mask == IGNORE_INDEX, ignore_becomes, mask)), name


def test_the_folder_lists_its_done_images_with_their_files(folder):
    assert [item.name for item in folder.items] == ["000.png", "002.png", "003.png", "004.png", "005.png",
                                                   "sub/001.jpg"]
    assert all(item.image.is_file() and item.mask.is_file() for item in folder.items)
    assert folder.classes == CLASSES


@pytest.mark.parametrize("instances", [False, True])
def test_coco_round_trip_and_pycocotools_rebuilds_each_mask(folder, tmp_path, instances):
    from pycocotools.coco import COCO

    coco = export_coco(folder, tmp_path / "coco" / "annotations.json", instances=instances)
    api = COCO(str(tmp_path / "coco" / "annotations.json"))
    for image in coco["images"]:
        mask = read_mask(folder.root / f"{image['file_name'].rsplit('.', 1)[0]}.png")
        rebuilt = np.full(mask.shape, IGNORE_INDEX, np.uint8)
        annotations = api.loadAnns(api.getAnnIds(imgIds=image["id"]))
        for annotation in annotations:
            region = api.annToMask(annotation).astype(bool)
            assert not (rebuilt[region] != IGNORE_INDEX).any()  # regions do not overlap
            rebuilt[region] = annotation["category_id"] - 1
            assert annotation["area"] == region.sum()
            ys, xs = np.nonzero(region)
            assert annotation["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert np.array_equal(rebuilt, mask)
        classes_present = len(set(np.unique(mask)) - {IGNORE_INDEX})
        assert (len(annotations) > classes_present) if instances else (len(annotations) == classes_present)
    assert_same_masks(folder, import_coco(tmp_path / "coco" / "annotations.json", tmp_path / "back"))


def test_labelstudio_round_trip_and_its_own_brush_decoder(folder, tmp_path):
    from label_studio_sdk.converter.brush import decode_from_annotation

    tasks = export_labelstudio(folder, tmp_path / "ls", image_root="/data/local-files/?d=images")
    assert json.loads((tmp_path / "ls" / "tasks.json").read_text()) == tasks
    config = (tmp_path / "ls" / "config.xml").read_text()
    assert all(f'<Label value="{name}"' in config for name in CLASSES)
    assert tasks[-1]["data"]["image"] == "/data/local-files/?d=images/sub/001.jpg"
    for task, item in zip(tasks, folder.items):
        mask = read_mask(item.mask)
        # Label Studio's converter reads results with the value's fields at the top level
        results = [{**result, **result["value"]} for result in task["predictions"][0]["result"]]
        layers = decode_from_annotation("label", results)
        decoded = np.full(mask.shape, IGNORE_INDEX, np.uint8)
        for name, layer in layers.items():
            decoded[layer > 0] = CLASSES.index(name.split("-")[1])
        assert np.array_equal(decoded, mask), item.name
    assert_same_masks(folder, import_labelstudio(tmp_path / "ls" / "tasks.json", tmp_path / "back"))


def test_labelstudio_import_prefers_the_latest_annotation(folder, tmp_path):
    tasks = export_labelstudio(folder, tmp_path / "ls")
    corrected = [result for result in tasks[0]["predictions"][0]["result"]
                 if result["value"]["brushlabels"] != ["background"]]
    tasks[0]["annotations"] = [{"was_cancelled": False, "result": corrected},
                               {"was_cancelled": True, "result": []}]
    (tmp_path / "edited.json").write_text(json.dumps(tasks))
    back = import_labelstudio(tmp_path / "edited.json", tmp_path / "back", original=CLASSES)
    mask = read_mask(folder.items[0].mask)
    assert np.array_equal(read_mask(back / "000.png"), np.where(mask == 0, IGNORE_INDEX, mask))


@pytest.mark.parametrize("ignore_as", ["ignore-label", "background"])
def test_cvat_round_trip(folder, tmp_path, ignore_as):
    out = export_cvat(folder, tmp_path / "cvat", ignore_as=ignore_as)
    labelmap = (out / "labelmap.txt").read_text().splitlines()
    assert labelmap[1] == "background:0,0,0::" and ("ignore:255,255,255::" in labelmap) == (ignore_as == "ignore-label")
    assert (out / "ImageSets" / "Segmentation" / "default.txt").read_text().split() == [
        item.name.rsplit(".", 1)[0] for item in folder.items]
    back = import_cvat(out, tmp_path / "back", original=CLASSES)
    assert_same_masks(folder, back, ignore_becomes=IGNORE_INDEX if ignore_as == "ignore-label" else 0)


def test_merged_classes_keep_the_original_order(folder, tmp_path):
    export_cvat(folder, tmp_path / "cvat")
    labelmap = (tmp_path / "cvat" / "labelmap.txt").read_text().splitlines()
    (tmp_path / "cvat" / "labelmap.txt").write_text("\n".join([labelmap[0], labelmap[3], *labelmap[1:3],
                                                               *labelmap[4:]]) + "\n")
    back = import_cvat(tmp_path / "cvat", tmp_path / "back", original=CLASSES + ["extra"])
    assert read_classes(back / "classes.txt") == CLASSES + ["extra"]
    assert np.array_equal(read_mask(back / "000.png"), read_mask(folder.items[0].mask))


def test_hf_export_loads_with_datasets(folder, tmp_path):
    import datasets

    out = export_hf(folder, tmp_path / "hf")
    dataset = datasets.load_dataset("imagefolder", data_dir=str(out), split="train",
                                    cache_dir=str(tmp_path / "cache"))
    assert {"image", "annotation", "labels"} <= set(dataset.column_names)
    assert len(dataset) == len(folder.items)
    expected = {read_mask(item.mask).tobytes(): item for item in folder.items}
    for row in dataset:
        annotation = np.asarray(row["annotation"])
        item = expected.pop(annotation.tobytes())
        assert row["image"].size == annotation.shape[::-1] and row["labels"] == item.entry["labels"]
    assert not expected


def test_export_the_worst_then_import_the_corrections(tmp_path):
    from freelabel.pipelines.export import export
    from freelabel.pipelines.import_masks import import_masks

    folder = make_label_folder(tmp_path)
    done = export(folder, "cvat", tmp_path / "cvat", worst=2)
    assert done["images"] == 2
    assert (tmp_path / "cvat" / "ImageSets" / "Segmentation" / "default.txt").read_text().split() == ["004", "005"]
    back = import_masks(tmp_path / "cvat", "cvat", tmp_path / "back", classes=folder / "classes.txt")
    assert back["images"] == 2 and back["classes"] == CLASSES
    assert np.array_equal(read_mask(tmp_path / "back" / "005.png"), read_mask(folder / "005.png"))
    with pytest.raises(Exception, match="unknown format"):
        export(folder, "voc", tmp_path / "voc")


@pytest.mark.slow
def test_generate_output_round_trips_and_reviews(tmp_path):
    """The real thing: ``freelabel generate`` on toy scenes, then every export and import and the review page."""
    import subprocess
    import sys
    from pathlib import Path

    from freelabel.pipelines.export import export
    from freelabel.pipelines.import_masks import import_masks
    from freelabel.pipelines.review import review

    command = str(Path(sys.executable).parent / "freelabel")
    subprocess.run([command, "toy", "scenes", "--seed", "9", "--n", "4", "--out", str(tmp_path / "scenes")],
                   check=True, capture_output=True)
    scenes = tmp_path / "scenes"
    subprocess.run([command, "generate", str(scenes / "images"), "--labels", str(scenes / "labels.json"),
                    "--model", "freelabel-toy", "--out", str(tmp_path / "out")], check=True, capture_output=True)
    folder = read_label_folder(tmp_path / "out")
    assert len(folder.items) == 4
    for format in ("coco", "labelstudio", "cvat"):
        export(tmp_path / "out", format, tmp_path / format)
        source = tmp_path / format / {"coco": "annotations.json", "labelstudio": "tasks.json", "cvat": ""}[format]
        import_masks(source, format, tmp_path / f"{format}-back", classes=tmp_path / "out" / "classes.txt")
        assert_same_masks(folder, tmp_path / f"{format}-back")
    assert export(tmp_path / "out", "hf", tmp_path / "hf")["images"] == 4
    page = review(tmp_path / "out")
    assert page["images"] == 4 and page["index"].is_file()
