"""Self-training rounds (`freelabel train --rounds N`): what each round trains on, the run folder they make, and
resuming, extending and stopping them."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FAST_TRAINING, kill_after_an_epoch
from freelabel.clip.config import ClipConfig
from freelabel.io import read_classes, read_mask
from freelabel.io.files import read_jsonl
from freelabel.pipelines.cli import main
from freelabel.segmenter.checkpoint import file_digest, read_position
from freelabel.segmenter.data import read_pseudo_masks, split
from freelabel.segmenter.rounds import train_rounds
from freelabel.segmenter.trainer import train_config

FREELABEL = str(Path(sys.executable).parent / "freelabel")
TIMING = {"images_per_second", "minutes"}



def _train(pseudo, out, *extra):
    return CliRunner().invoke(main, ["train", str(pseudo / "pseudo"), "--out", str(out), *FAST_TRAINING, *extra])


def _config(**overrides):
    return train_config(ClipConfig(model="test-tiny-vit", pretrained="random"), architecture="rankseg-small",
                        batch_size=4, workers=0, input_size=32, epochs=2, **overrides)


def _metrics(run):
    return [{k: v for k, v in line.items() if k not in TIMING} for line in read_jsonl(run / "metrics.jsonl")]


def test_round_two_trains_on_round_ones_masks_and_predict_uses_the_last_round(pseudo, tmp_path):
    run = tmp_path / "run"
    result = _train(pseudo, run, "--epochs", "1", "--rounds", "2", "--round-ignore-threshold", "0.6")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("round 2: trained 1 epochs")
    # round 2's masks: round 1's segmenter on the training images only, each with its labels from the manifest
    masks = run / "round-2" / "masks"
    data = read_pseudo_masks(pseudo / "pseudo")
    train_indices, val_indices = split(len(data.names), 0.1, 0)
    assert read_classes(masks / "classes.txt") == data.classes
    assert sorted(p.name for p in masks.glob("*.png")) == [data.names[i] for i in train_indices]
    manifest = json.loads((masks / "manifest.json").read_text())
    assert manifest["model_sha256"] == file_digest(run / "model.safetensors")
    for i in train_indices:
        assert manifest["images"][data.names[i]]["labels"] == data.labels[i]
        allowed = {0, 255, *(data.classes.index(label) for label in data.labels[i])}
        assert set(np.unique(read_mask(masks / data.names[i])).tolist()) <= allowed
    assert any(entry["ignored_fraction"] > 0 for entry in manifest["images"].values())  # below 0.6: ignored
    # round 2 is a run folder of its own, bound to its masks and to round 1's weights it started from
    round_two = json.loads((run / "round-2" / "run.json").read_text())
    assert round_two["data"]["masks"] == str(masks)
    assert round_two["start"]["model_sha256"] == file_digest(run / "model.safetensors")
    assert [(line.get("round"), line["epoch"]) for line in read_jsonl(run / "metrics.jsonl")] == [(None, 1), (2, 1)]
    # predict uses the last round unless told which
    images = str(pseudo / "images")
    for flags, folder in (([], run / "round-2"), (["--round", "1"], run), (["--round", "2"], run / "round-2")):
        out = tmp_path / f"predicted{len(flags)}{folder.name}"
        done = CliRunner().invoke(main, ["predict", str(run), images, "--out", str(out), *flags])
        assert done.exit_code == 0, done.output
        assert json.loads((out / "manifest.json").read_text())["model_sha256"] == file_digest(
            folder / "model.safetensors")
    # a round is bound to where it started: another start for the same rounds is refused
    refused = _train(pseudo, run, "--epochs", "1", "--rounds", "2", "--round-ignore-threshold", "0.6",
                     "--round-start", "scratch")
    assert refused.exit_code == 2 and "holds another training run" in refused.output


def test_a_round_from_scratch_starts_from_no_weights(pseudo, tmp_path):
    assert _train(pseudo, tmp_path / "run", "--epochs", "1", "--rounds", "2", "--round-start", "scratch").exit_code == 0
    assert "start" not in json.loads((tmp_path / "run" / "round-2" / "run.json").read_text())


def test_a_run_stopped_in_round_two_or_extended_reaches_an_unbroken_runs_bytes(pseudo, tmp_path):
    whole = tmp_path / "whole"
    train_rounds(pseudo / "pseudo", whole, _config(rounds=2))
    # one round, then extended to two; stopped after round 2's first step by the budget of both rounds together
    run = tmp_path / "run"
    train_rounds(pseudo / "pseudo", run, _config(rounds=1))
    assert not (run / "round-2").exists()
    first_round = read_position(run)["seconds"]
    train_rounds(pseudo / "pseudo", run, _config(rounds=2, max_minutes=first_round / 60 + 1e-6))
    assert read_position(run / "round-2")["step"] == 1
    train_rounds(pseudo / "pseudo", run, _config(rounds=2))
    for folder in (".", "round-2"):
        assert (run / folder / "model.safetensors").read_bytes() == (whole / folder / "model.safetensors").read_bytes()
    assert _metrics(run) == _metrics(whole)
    # a budget spent by the first rounds begins no further round
    train_rounds(pseudo / "pseudo", run, _config(rounds=3, max_minutes=first_round / 60))
    assert not (run / "round-3").exists()


@pytest.mark.slow
def test_a_run_killed_in_round_two_resumes_to_an_unbroken_runs_bytes(pseudo, tmp_path):
    command = [FREELABEL, "train", str(pseudo / "pseudo"), *FAST_TRAINING, "--epochs", "3", "--rounds", "2",
               "--seed", "3"]
    done = subprocess.run([*command, "--out", str(tmp_path / "whole")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    kill_after_an_epoch([*command, "--out", str(tmp_path / "killed")], tmp_path / "killed" / "round-2")
    resumed = subprocess.run([*command, "--out", str(tmp_path / "killed")], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    for folder in (".", "round-2"):
        assert (tmp_path / "killed" / folder / "model.safetensors").read_bytes() == (
            tmp_path / "whole" / folder / "model.safetensors").read_bytes()
    assert _metrics(tmp_path / "killed") == _metrics(tmp_path / "whole")


@pytest.mark.parametrize("args, message", [
    (["train", "{pseudo}", "--out", "{tmp}/run", "--rounds", "0"], "rounds must be a positive integer"),
    (["train", "{pseudo}", "--out", "{tmp}/run", "--round-ignore-threshold", "1"], "round_ignore_threshold"),
    (["predict", "{run}", "{images}", "--out", "{tmp}/x", "--round", "3"], "has no round 3"),
    (["predict", "{run}", "{images}", "--out", "{tmp}/x", "--round", "0"], "round must be at least 1"),
])
def test_bad_rounds_are_one_error_line(pseudo, tmp_path_factory, args, message):
    tmp = tmp_path_factory.mktemp("bad")
    run = tmp_path_factory.getbasetemp() / "one-round-run"
    if not (run / "model.safetensors").is_file():
        assert _train(pseudo, run, "--epochs", "1").exit_code == 0
    fields = {"tmp": tmp, "pseudo": pseudo / "pseudo", "run": run, "images": pseudo / "images"}
    result = CliRunner().invoke(main, [a.format(**fields) for a in args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error:")]) == 1


def test_a_run_trained_before_rounds_existed_gets_more_rounds(pseudo, tmp_path):
    assert _train(pseudo, tmp_path / "run", "--epochs", "1").exit_code == 0
    content = json.loads((tmp_path / "run" / "run.json").read_text())
    for key in ("rounds", "round_start", "round_ignore_threshold"):  # as an older freelabel wrote it
        del content["train"][key]
    (tmp_path / "run" / "run.json").write_text(json.dumps(content))
    model = (tmp_path / "run" / "model.safetensors").read_bytes()
    result = _train(pseudo, tmp_path / "run", "--epochs", "1", "--rounds", "2")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == model  # round 1 is not trained again
    assert (tmp_path / "run" / "round-2" / "model.safetensors").is_file()
