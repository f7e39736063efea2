"""Training the segmenter on a generate folder, resuming after a kill, predicting with it, and its errors."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import click
import torch
from click.testing import CliRunner

from conftest import FAST_TRAINING, kill_after_an_epoch
from freelabel.pipelines.cli import main
from freelabel.clip.config import ClipConfig
from freelabel.errors import FreelabelError
from freelabel.io import read_classes, read_mask, write_image
from freelabel.io.files import read_jsonl
from freelabel.segmenter.checkpoint import read_position
from freelabel.segmenter.predictor import Segmenter
from freelabel.segmenter.trainer import TrainConfig, train, train_config
from freelabel.toy.world import scenes

TINY = ["--model", "test-tiny-vit", "--pretrained", "random"]
FREELABEL = str(Path(sys.executable).parent / "freelabel")
# small and fast: 32 px crops of the tiny tower, a few steps



def _train(pseudo, out, *extra):
    return CliRunner().invoke(main, ["train", str(pseudo / "pseudo"), "--out", str(out), *FAST_TRAINING, *extra])


def test_train_writes_a_run_and_predict_reads_it(pseudo, tmp_path):
    result = _train(pseudo, tmp_path / "run", "--epochs", "2")
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["clip"]["model"] == "test-tiny-vit"  # the CLIP that made the pseudo-masks
    assert run["vocabulary"] == read_classes(pseudo / "pseudo" / "classes.txt")[1:]
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert {"loss", "images_per_second", "val_miou", "val_miou_given_labels"} <= set(metrics[0])
    assert not any(p.suffix in {".pt", ".pth", ".pkl"} for p in (tmp_path / "run").iterdir())

    # with labels (also a name never trained on), in generate's format
    labels = json.loads((pseudo / "labels.json").read_text())
    labels["000.png"] = labels["000.png"] + ["purple elephant"]
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "run"), str(pseudo / "images"), "--labels",
                                       str(tmp_path / "labels.json"), "--out", str(tmp_path / "given")])
    assert result.exit_code == 0, result.output
    classes = read_classes(tmp_path / "given" / "classes.txt")
    assert "purple elephant" in classes
    manifest = json.loads((tmp_path / "given" / "manifest.json").read_text())
    assert manifest["images"]["000.png"]["labels"] == labels["000.png"]
    mask = read_mask(tmp_path / "given" / "000.png")
    allowed = {0} | {classes.index(label) for label in labels["000.png"]}
    assert set(np.unique(mask)) <= allowed

    # without labels: its own selection among the vocabulary (plus --vocab)
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "run"), str(pseudo / "images"), "--out",
                                       str(tmp_path / "own"), "--vocab", "purple elephant", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    own = json.loads((tmp_path / "own" / "manifest.json").read_text())
    assert read_classes(tmp_path / "own" / "classes.txt") == ["background", *run["vocabulary"], "purple elephant"]
    assert all(len(entry["labels"]) == 2 and len(entry["label_scores"]) == 2 for entry in own["images"].values())
    result = CliRunner().invoke(main, ["evaluate", "--pred", str(tmp_path / "own"), "--gt",
                                       str(pseudo / "pseudo"), "--classes", str(pseudo / "pseudo" / "classes.txt")])
    assert result.exit_code == 0, result.output

    # a rerun skips every finished image
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "run"), str(pseudo / "images"), "--out",
                                       str(tmp_path / "own"), "--vocab", "purple elephant", "--top-k", "2"])
    assert result.exit_code == 0 and "0 masks written, 16 skipped" in result.output


def test_segmenter_facade_answers_many_queries_from_one_image_pass(pseudo, tmp_path):
    assert _train(pseudo, tmp_path / "run", "--epochs", "1").exit_code == 0
    segmenter = Segmenter.from_run(tmp_path / "run")
    with pytest.raises(FreelabelError, match="set_image"):
        segmenter.segment(["red circle"])
    image = next(scenes(8, 1)).image
    segmenter.set_image(image)
    features = segmenter._features
    first = segmenter.segment(["blue square", "red circle"])
    assert first.labels == ["blue square", "red circle"]
    assert first.mask.shape == image.shape[:2] and first.probabilities.shape == (3, *image.shape[:2])
    np.testing.assert_allclose(first.probabilities.sum(0), 1, atol=1e-5)
    own = segmenter.segment()
    assert len(own.labels) == segmenter.model.config.top_k and set(own.labels) <= set(segmenter.vocabulary)
    assert list(own.label_scores) == sorted(own.label_scores, reverse=True)  # by rank
    assert segmenter._features is features  # no second image pass
    with pytest.raises(FreelabelError, match="non-empty"):
        segmenter.segment(["", "red circle"])
    # a run trained on a GPU loads on a machine without one
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    run["clip"]["device"] = "cuda"
    (tmp_path / "run" / "run.json").write_text(json.dumps(run))
    if not torch.cuda.is_available():
        assert Segmenter.from_run(tmp_path / "run").device.type == "cpu"


def test_loss_falls_on_a_tiny_overfit_set(pseudo, tmp_path):
    config = train_config(ClipConfig(model="test-tiny-vit", pretrained="random"), architecture="rankseg-small",
                          batch_size=4, workers=0, input_size=32, epochs=12, lr=2e-3, val_fraction=0.0,
                          scale_range=(1.0, 1.0))
    train(pseudo / "pseudo", tmp_path / "run", config)
    losses = [m["loss"] for m in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.slow
def test_a_killed_training_run_resumes_to_the_same_weights(pseudo, tmp_path):
    command = [FREELABEL, "train", str(pseudo / "pseudo"), *FAST_TRAINING, "--epochs", "3", "--seed", "3"]
    done = subprocess.run([*command, "--out", str(tmp_path / "whole")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # killed from outside once the state of a finished epoch exists, while later epochs run
    kill_after_an_epoch([*command, "--out", str(tmp_path / "killed")], tmp_path / "killed")
    assert not (tmp_path / "killed" / "metrics.jsonl").is_file() or len(
        read_jsonl(tmp_path / "killed" / "metrics.jsonl")) < 3
    resumed = subprocess.run([*command, "--out", str(tmp_path / "killed")], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "killed" / "model.safetensors").read_bytes() == (
        tmp_path / "whole" / "model.safetensors").read_bytes()
    whole = [{k: v for k, v in m.items() if k not in {"images_per_second", "minutes"}}
             for m in read_jsonl(tmp_path / "whole" / "metrics.jsonl")]
    again = [{k: v for k, v in m.items() if k not in {"images_per_second", "minutes"}}
             for m in read_jsonl(tmp_path / "killed" / "metrics.jsonl")]
    assert again == whole
    segmenter = Segmenter.from_run(tmp_path / "killed")  # and the resumed run predicts
    segmenter.set_image(next(scenes(9, 1)).image)
    assert segmenter.segment(["red circle"]).mask.shape == (64, 64)


@pytest.mark.slow
def test_torchrun_trains_on_two_cpu_processes(pseudo, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    done = subprocess.run([torchrun, "--nproc-per-node", "2", "--no-python", FREELABEL, "train",
                           str(pseudo / "pseudo"), "--out", str(tmp_path / "run"), *FAST_TRAINING, "--epochs", "2"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2]  # written once, by process 0
    assert Segmenter.from_run(tmp_path / "run").vocabulary
    # process 0 refuses another run's settings in the folder: every process ends, none waits for it
    refused = subprocess.run([torchrun, "--nproc-per-node", "2", "--no-python", FREELABEL, "train",
                              str(pseudo / "pseudo"), "--out", str(tmp_path / "run"), *FAST_TRAINING, "--epochs", "2",
                              "--lr", "0.01"], capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "holds another training run" in refused.stderr


def test_a_corrupt_training_image_costs_one_line(pseudo, tmp_path):
    copy = tmp_path / "pseudo"
    shutil.copytree(pseudo / "pseudo", copy)
    images = tmp_path / "images"
    shutil.copytree(pseudo / "images", images)
    (images / "003.png").write_bytes(b"not a png")
    args = ["--epochs", "2", "--images", str(images), "--val-fraction", "0"]
    result = _train(tmp_path, tmp_path / "run", *args)
    assert result.exit_code == 0, result.output
    errors = read_jsonl(tmp_path / "run" / "errors.jsonl")
    assert len(errors) == 1 and errors[0]["path"].endswith("003.png") and errors[0]["stage"] == "read"
    # stopped after a step and resumed: the problem is still one line
    assert _train(tmp_path, tmp_path / "again", *args, "--max-minutes", "1e-9").exit_code == 0
    assert _train(tmp_path, tmp_path / "again", *args).exit_code == 0
    assert len(read_jsonl(tmp_path / "again" / "errors.jsonl")) == 1


@pytest.mark.parametrize("args, message", [
    (["train", "{tmp}", "--out", "{tmp}/run"], "not a freelabel generate output"),
    (["predict", "{tmp}", "{tmp}", "--out", "{tmp}/x"], "not a freelabel training run"),
])
def test_wrong_folders_are_one_error_line(tmp_path, args, message):
    result = CliRunner().invoke(main, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_a_run_folder_is_not_reused_for_another_run(pseudo, tmp_path):
    assert _train(pseudo, tmp_path / "run", "--epochs", "1").exit_code == 0
    result = _train(pseudo, tmp_path / "run", "--epochs", "1", "--lr", "0.01")
    assert result.exit_code == 2 and "holds another training run" in result.output


def test_held_out_labels_leave_the_vocabulary(pseudo, tmp_path):
    classes = read_classes(pseudo / "pseudo" / "classes.txt")
    result = _train(pseudo, tmp_path / "run", "--epochs", "1", "--holdout-labels", classes[1])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert classes[1] not in run["vocabulary"] and len(run["vocabulary"]) == len(classes) - 2
    result = _train(pseudo, tmp_path / "other", "--holdout-labels", "no such label")
    assert result.exit_code == 2 and "not in" in result.output


def test_max_minutes_stops_with_a_resumable_state_and_real_masks_validate(pseudo, tmp_path):
    config = train_config(ClipConfig(model="test-tiny-vit", pretrained="random"), architecture="rankseg-small",
                          batch_size=4, workers=0, input_size=32, epochs=2, max_minutes=1e-6,
                          val_masks=str(pseudo / "pseudo"))
    train(pseudo / "pseudo", tmp_path / "run", config)
    state = read_position(tmp_path / "run")
    assert state["step"] == 1 and state["epoch"] == 0  # stopped after its first step
    assert not (tmp_path / "run" / "metrics.jsonl").is_file()
    metrics = train(pseudo / "pseudo", tmp_path / "run", dataclasses.replace(config, max_minutes=None))
    assert metrics["epoch"] == 2 and metrics["step"] == 2 * (14 // 4)  # 16 images, 2 for validation
    assert 0 <= metrics["val_masks_miou"] <= 1 and "val_masks_miou_given_labels" in metrics


def test_a_models_training_preset_is_its_default_and_flags_override_it():
    toy = train_config(ClipConfig(model="freelabel-toy"))
    assert toy.architecture == "rankseg-small"  # the training section of freelabel/model_cards/freelabel-toy.json
    assert train_config(ClipConfig(model="freelabel-toy"), epochs=3).epochs == 3
    assert train_config(ClipConfig(model="ViT-B-16")) == TrainConfig(clip=ClipConfig(model="ViT-B-16"))


def test_every_training_setting_has_a_flag():
    flags = {option.name for option in main.get_command(click.Context(main), "train").params}
    named = {"clip": "model", "images_dir": "images"}
    missing = [f.name for f in dataclasses.fields(TrainConfig) if named.get(f.name, f.name) not in flags]
    assert not missing, missing


def test_query_with_a_trained_segmenter(pseudo, tmp_path):
    assert _train(pseudo, tmp_path / "run", "--epochs", "1").exit_code == 0
    write_image(tmp_path / "scene.png", next(scenes(9, 1)).image)
    result = CliRunner().invoke(main, ["query", str(tmp_path / "scene.png"), "red circle", "never trained name",
                                       "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "out" / "queries.jsonl").read_text().splitlines()]
    assert [line["mask"] for line in lines] == ["query00.png", "query01.png"]


def test_corrected_masks_replace_their_pseudo_masks_in_their_own_class_order(pseudo, tmp_path):
    """A corrected folder (as `freelabel import` writes it: its own classes.txt, here in another order and with a
    class the pseudo-masks never name) replaces those images' pseudo-masks, class by class name."""
    from freelabel.io import read_mask, write_mask
    from freelabel.io.labels import write_classes
    from freelabel.segmenter.data import read_pseudo_masks, vocabulary_lookup

    classes = read_classes(pseudo / "pseudo" / "classes.txt")
    corrected = tmp_path / "corrected"
    own = ["background", "purple elephant", *reversed(classes[1:])]
    write_classes(corrected / "classes.txt", own)
    original = read_mask(pseudo / "pseudo" / "001.png")
    remapped = np.full_like(original, 255)
    for k, name in enumerate(classes):
        remapped[original == k] = own.index(name)
    remapped[:2, :2] = 1  # the elephant
    write_mask(corrected / "001.png", remapped)
    data = read_pseudo_masks(pseudo / "pseudo", corrected=corrected)
    assert data.classes == [*classes, "purple elephant"] and len(data.names) == 16
    index = data.names.index("001.png")
    assert data.masks[index] == corrected / "001.png" and set(data.corrected) == {index}
    lookup = vocabulary_lookup(data.classes, data.classes[1:])
    as_vocabulary = data.mask_lookup(index, lookup)[read_mask(data.masks[index])]
    expected = lookup[original].copy()
    expected[:2, :2] = len(classes)  # the elephant, last in the vocabulary
    assert np.array_equal(as_vocabulary, expected)
    other = data.names.index("002.png")
    assert np.array_equal(data.mask_lookup(other, lookup)[read_mask(data.masks[other])],
                          lookup[read_mask(pseudo / "pseudo" / "002.png")])

    result = _train(pseudo, tmp_path / "run", "--epochs", "1", "--corrected", str(corrected))
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["data"]["corrected"] == 1 and "purple elephant" in run["vocabulary"]
    empty = tmp_path / "empty"
    write_classes(empty / "classes.txt", ["background"])
    refused = _train(pseudo, tmp_path / "run2", "--epochs", "1", "--corrected", str(empty))
    assert refused.exit_code == 2 and "holds no mask named like an image" in refused.output
