"""The committed toy CLIP: it loads offline through the same loader as real models, and it classifies."""

import json

import pytest
from click.testing import CliRunner

from cli import main
from freelabel.clip import BUNDLED, TOY_MODEL, load_clip
from freelabel.toy.evaluate import zero_shot_report
from freelabel.toy.train import ToyClipTrainConfig, train_toy_clip
from freelabel.toy.world import class_by_name, scenes

WEIGHTS = BUNDLED[TOY_MODEL][1]


def test_bundled_weights_are_small_safetensors():
    assert WEIGHTS.suffix == ".safetensors" and WEIGHTS.stat().st_size <= 20e6
    assert WEIGHTS.with_name(f"{TOY_MODEL}.json").is_file()


def test_toy_clip_loads_offline_and_classifies_held_out_scenes():
    clip = load_clip(TOY_MODEL, offline=True)
    report = zero_shot_report(clip, list(scenes(1003, 150, n_objects=1)))
    assert report["colour"] > 0.95 and report["texture"] > 0.95
    # chance is 1/18; colour and texture right leave a 1-in-3 guess of shape, which the toy CLIP does not
    # learn within its budget (README, "Known limitation"); the benchmark measures the figures on 500 scenes
    assert report["top1"] > 0.25


def test_classify_command_on_the_bundled_example(tmp_path):
    result = CliRunner().invoke(main, ["classify", "examples/toy/images", "--labels", "examples/toy/classes.txt",
                                       "--model", TOY_MODEL, "--top-k", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    predicted = json.loads((tmp_path / "labels.json").read_text())
    truth = json.loads(open("examples/toy/labels.json").read())
    assert sorted(predicted) == sorted(truth) and all(len(v) == 1 for v in predicted.values())

    def looks(name):
        toy_class = class_by_name(name)
        return toy_class.colour, toy_class.texture

    # what the toy CLIP knows: the top label's colour and texture belong to an object in the scene
    hits = sum(looks(predicted[name][0]) in {looks(label) for label in truth[name]} for name in truth)
    assert hits >= 7, (predicted, truth)


@pytest.mark.slow
def test_train_clip_end_to_end_writes_loadable_weights(tmp_path):
    config = ToyClipTrainConfig(pool_size=300, budget_minutes=0.15, eval_every_minutes=0.05, val_scenes=30,
                                render_workers=1)
    record = train_toy_clip(tmp_path, config)
    assert record["steps"] > 0 and len(record["curve"]) >= 2
    assert (tmp_path / f"{TOY_MODEL}.json").is_file() and (tmp_path / f"{TOY_MODEL}-curve.json").is_file()
    clip = load_clip(TOY_MODEL, str(tmp_path / f"{TOY_MODEL}.safetensors"))
    assert clip.encode_labels(["red circle"]).shape == (1, 128)
