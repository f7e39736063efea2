import json
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FAST_TRAINING
from freelabel.pipelines.cli import main
from freelabel.io import read_classes, read_image, read_mask, write_image
from freelabel.toy.world import CLASS_NAMES, scenes


def test_evaluate_imports_no_torch():
    """Each command is built with its own imports only (seconds of start-up per call): ``evaluate`` needs no torch."""
    code = ("import sys; from freelabel.pipelines.cli import main; main(['evaluate', '--help'], standalone_mode=False);"
            " sys.exit('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or "torch was imported"


def test_toy_scenes_writes_the_dataset_layout(tmp_path):
    result = CliRunner().invoke(main, ["toy", "scenes", "--seed", "5", "--n", "3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert read_classes(tmp_path / "classes.txt") == ["background", *CLASS_NAMES]
    labels = json.loads((tmp_path / "labels.json").read_text())
    captions = json.loads((tmp_path / "captions.json").read_text())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["seed"] == 5 and config["world"]["image_size"] == 64 and "versions" in config
    for name, scene in zip(sorted(labels), scenes(5, 3)):
        assert np.array_equal(read_image(tmp_path / "images" / name), scene.image)
        assert np.array_equal(read_mask(tmp_path / "masks" / name), scene.mask)
        assert labels[name] == scene.labels and captions[name] == scene.caption


def test_toy_clips_writes_frames_and_masks(tmp_path):
    args = ["toy", "clips", "--seed", "1", "--n", "2", "--frames", "16", "--size", "48", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "images" / "clip0001").glob("*.png"))) == 16
    assert read_mask(tmp_path / "masks" / "clip0000" / "00015.png").shape == (48, 48)
    assert len(json.loads((tmp_path / "labels.json").read_text())) == 32


def test_bad_world_option_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["toy", "scenes", "--seed", "1", "--n", "1", "--size", "4", "--out",
                                       str(tmp_path)])
    assert result.exit_code == 2 and "image_size" in result.output


def test_missing_weights_offline_is_one_message_not_a_traceback(tmp_path):
    write_image(tmp_path / "images" / "a.png", np.zeros((8, 8, 3), np.uint8))
    result = CliRunner().invoke(main, ["classify", str(tmp_path / "images"), "--vocab", "cat,dog", "--out",
                                       str(tmp_path / "out"), "--model", "ViT-B-16", "--pretrained", "openai",
                                       "--offline", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2
    assert "Could not find the CLIP weights" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_classify_reports_corrupt_images_and_labels_the_rest(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for i, scene in enumerate(scenes(3, 2)):
        write_image(images / "sub" / f"{i}.png", scene.image)
    (images / "broken.jpg").write_bytes(b"definitely not a jpeg")
    args = ["classify", str(images), "--vocab", "red circle,blue square,cat", "--out", str(tmp_path / "out"),
            "--model", "test-tiny-vit", "--pretrained", "random", "--top-k", "2", "--min-score", "0",
            "--max-overlap", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "1 failed" in result.output, result.output
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert sorted(labels) == ["sub/0.png", "sub/1.png"] and all(len(v) == 2 for v in labels.values())
    assert [(Path(e["path"]).name, e["stage"]) for e in errors] == [("broken.jpg", "read")]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    entry = manifest["images"]["sub/0.png"]
    assert list(entry["scores"])[:2] == entry["labels"] and all(0 <= v <= 1 for v in entry["scores"].values())
    assert manifest["config"]["clip"]["model"] == "test-tiny-vit" and manifest["selection"]["top_k"] == 2
    # a rerun resumes (nothing redone, same bytes); other settings are refused without --overwrite
    before = (tmp_path / "out" / "labels.json").read_bytes()
    assert "0 labelled" not in CliRunner().invoke(main, args).output
    assert (tmp_path / "out" / "labels.json").read_bytes() == before
    refused = CliRunner().invoke(main, args[:-1] + ["0.5"])
    assert refused.exit_code == 2 and "another job" in refused.output


INVALID_LABELER_OPTIONS = [
    ["--ignore-threshold", "2"], ["--surgery-blocks", "-1"], ["--scales", "0"], ["--scales", "one,two"],
    ["--input-size", "0"], ["--window", "-8"], ["--softmin-temperature", "0"], ["--fusion-upsampling", "0"],
    ["--background-threshold", "-0.1"], ["--sharpness", "0"],
    ["--crf-iterations", "0"], ["--crf-window", "4"], ["--crf-downsample", "0"], ["--crf-gaussian-sxy", "0"],
    ["--crf-bilateral-srgb", "-1"], ["--crf-bilateral-compat", "-2"], ["--fusion", "median"],
    ["--crf-backend", "magic"], ["--surgery-blocks", "many"], ["--device", "banana"], ["--device", "cuda:7"],
]


def _assert_one_error_line(result, out):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert sum(line.startswith("Error:") for line in result.output.splitlines()) == 1, result.output
    assert not out.exists(), "nothing may be written before the settings are validated"


@pytest.mark.parametrize("option", INVALID_LABELER_OPTIONS, ids=lambda o: " ".join(o))
def test_invalid_generate_options_are_one_error_line_before_any_work(tmp_path, option):
    write_image(tmp_path / "images" / "a.png", np.zeros((8, 8, 3), np.uint8))
    out = tmp_path / "out"
    args = ["generate", str(tmp_path / "images"), "--labels", "cat", "--out", str(out), "--model", "freelabel-toy"]
    _assert_one_error_line(CliRunner().invoke(main, args + option), out)


@pytest.mark.parametrize("option", [["--holdout", "1.5"], ["--workers", "0"], ["--rounds", "0"], ["--crf-window", "2"]],
                         ids=lambda o: " ".join(o))
def test_invalid_tune_options_are_one_error_line(tmp_path, option):
    (tmp_path / "images").mkdir()
    (tmp_path / "classes.txt").write_text("0 background\n1 cat\n")
    out = tmp_path / "preset.json"
    args = ["tune", str(tmp_path / "images"), "--masks", str(tmp_path / "images"), "--classes",
            str(tmp_path / "classes.txt"), "--out", str(out), "--model", "freelabel-toy"]
    _assert_one_error_line(CliRunner().invoke(main, args + option), out)


def test_a_bad_preset_file_is_one_error_line(tmp_path):
    write_image(tmp_path / "images" / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "p.json").write_text('{"labeler": {"sharpness": "very"}}')
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["generate", str(tmp_path / "images"), "--labels", "cat", "--out", str(out),
                                       "--model", "freelabel-toy", "--preset", str(tmp_path / "p.json")])
    _assert_one_error_line(result, out)
    assert "p.json" in result.output


def test_evaluate_refuses_missing_predictions_unless_allowed(tmp_path):
    from freelabel.io import write_classes, write_mask

    write_classes(tmp_path / "classes.txt", ["background", "cat"])
    for name in ("a.png", "b.png"):
        write_mask(tmp_path / "gt" / name, np.ones((4, 4), np.uint8))
    write_mask(tmp_path / "pred" / "a.png", np.ones((4, 4), np.uint8))
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--classes",
            str(tmp_path / "classes.txt"), "--json"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "b.png" in refused.output and "Traceback" not in refused.output
    allowed = CliRunner().invoke(main, args + ["--allow-missing"])
    assert allowed.exit_code == 0, allowed.output
    report = json.loads(allowed.output)
    assert report["missing"] == ["b.png"] and report["miou"] == 0.5  # cat: 16 of 32 pixels; background absent


def test_every_labeler_and_crf_setting_has_a_flag():
    import dataclasses

    from freelabel.pseudo.config import CrfConfig, LabelerConfig

    for command in ("generate", "tune"):
        flags = {opt for param in main.get_command(click.Context(main), command).params for opt in param.opts}
        wanted = {f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(LabelerConfig) if f.name != "crf"}
        wanted |= {f"--crf-{f.name.replace('_', '-')}" for f in dataclasses.fields(CrfConfig)} | {"--crf", "--preset"}
        assert wanted <= flags, (command, wanted - flags)


def test_a_flag_overrides_one_field_of_the_preset_and_the_manifest_records_both(tmp_path):
    from freelabel.cards import model_preset

    for i, scene in enumerate(scenes(3, 2)):
        write_image(tmp_path / "images" / f"{i}.png", scene.image)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["generate", str(tmp_path / "images"), "--labels", "red circle", "--out",
                                       str(out), "--model", "freelabel-toy", "--crf-iterations", "1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    preset = model_preset("freelabel-toy")
    assert manifest["preset"]["labeler"] == json.loads(json.dumps(preset.to_dict()["labeler"]))
    expected = preset.labeler.with_overrides(crf_iterations=1).to_dict()
    assert manifest["labeler"] == json.loads(json.dumps(expected)) and manifest["labeler"]["crf"]["iterations"] == 1


@pytest.mark.parametrize("args", [
    ["toy", "scenes", "--seed", "1", "--n", "2", "--size", "8"],
    ["toy", "scenes", "--seed", "1", "--n", "0"],
    ["toy", "scenes", "--seed", "1", "--n", "2", "--min-objects", "3", "--max-objects", "2"],
    ["toy", "clips", "--seed", "1", "--n", "1", "--frames", "0"],
    ["toy", "train-clip", "--minutes", "1", "--supervised-minutes", "2"],
    ["toy", "train-clip", "--minutes", "-1"],
    ["classify", "IMAGES", "--vocab", "cat", "--top-k", "0"],
    ["classify", "IMAGES", "--vocab", "cat", "--min-score", "1.5"],
    ["classify", "IMAGES", "--vocab", "cat,background"],
], ids=lambda a: " ".join(a[:2] + a[-2:]))
def test_invalid_toy_and_classify_options_are_one_error_line(tmp_path, args):
    (tmp_path / "images").mkdir()
    out = tmp_path / "out"
    args = [str(tmp_path / "images") if a == "IMAGES" else a for a in args] + ["--out", str(out)]
    _assert_one_error_line(CliRunner().invoke(main, args), out)


def test_a_device_this_machine_lacks_is_one_error_line_before_any_work_in_every_model_command(tmp_path, pseudo):
    """The device's name is checked with the settings; whether this machine has it, where the model runs (a Ray
    run's workers may have GPUs its driver lacks): for every command that runs a model here, before any output."""
    missing = "cuda:63"
    write_image(tmp_path / "images" / "a.png", np.zeros((16, 16, 3), np.uint8))
    run = tmp_path / "run"
    trained = CliRunner().invoke(main, ["train", str(pseudo / "pseudo"), "--out", str(run), *FAST_TRAINING,
                                        "--epochs", "1"])
    assert trained.exit_code == 0, trained.output
    images, toy = str(tmp_path / "images"), ["--model", "freelabel-toy"]
    commands = {
        "generate": ["generate", images, "--labels", "cat", *toy],
        "generate --vocab": ["generate", images, "--vocab", "cat,dog", *toy],
        "classify": ["classify", images, "--vocab", "cat,dog", *toy],
        "predict": ["predict", str(run), images],
        "query": ["query", str(tmp_path / "images" / "a.png"), "cat", *toy],
        "video": ["video", images, "--labels", "cat", *toy],
        "tune": ["tune", str(pseudo / "images"), "--masks", str(pseudo / "pseudo"), "--classes",
                 str(pseudo / "pseudo" / "classes.txt"), *toy],
        "train": ["train", str(pseudo / "pseudo"), *FAST_TRAINING],
    }
    for name, args in commands.items():
        out = tmp_path / f"out-{name.replace(' ', '')}"
        result = CliRunner().invoke(main, [*args, "--out", str(out), "--device", missing])
        assert missing in result.output, (name, result.output)
        _assert_one_error_line(result, out)
