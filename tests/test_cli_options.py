"""The command line is built from the configs' field metadata: every field has its help text, every flag of the
command keeps its name, `--help` lists the options, and `--config FILE` (JSON or YAML) sets any option, the flags
given overriding it."""

import dataclasses
import importlib
import json
import subprocess
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner

from freelabel.io import write_image
from freelabel.pipelines import cli
from freelabel.pipelines.cli import main
from freelabel.toy.world import scenes

# the configs the commands build their options from, by module
CONFIGS = {"ClipConfig": "freelabel.clip.config", "LabelerConfig": "freelabel.pseudo.config",
           "SelectionConfig": "freelabel.pseudo.config", "CrfConfig": "freelabel.pseudo.crf",
           "PamrConfig": "freelabel.pseudo.pamr", "TrainConfig": "freelabel.segmenter.trainer",
           "FlowConfig": "freelabel.video.flow", "PropagationConfig": "freelabel.video.propagate",
           "ToyClipTrainConfig": "freelabel.toy.train", "ToyWorldConfig": "freelabel.toy.world",
           "GenerateConfig": "freelabel.pipelines.generate", "ClassifyConfig": "freelabel.run.selection",
           "PredictConfig": "freelabel.pipelines.predict", "EngineConfig": "freelabel.run.engines",
           "VideoConfig": "freelabel.pipelines.video", "QueryConfig": "freelabel.pipelines.query",
           "TuneConfig": "freelabel.pipelines.tune", "ReviewConfig": "freelabel.review"}

CLIP = "--model --pretrained --device --cache-dir --offline --online --text-cache"
LABELER = ("--preset --method --surgery-blocks --gaussian-std --feature-surgery --no-feature-surgery --input-size "
           "--scales --flip --no-flip --window --fusion --softmin-temperature --fusion-upsampling "
           "--background-threshold --background-words --sharpness --pamr --no-pamr --pamr-iterations --pamr-dilations "
           "--crf --no-crf --crf-backend --crf-iterations --crf-gaussian-sxy --crf-gaussian-compat --crf-bilateral-sxy "
           "--crf-bilateral-srgb --crf-bilateral-compat --crf-window --crf-downsample --ignore-threshold")
SELECTION = "--top-k --min-score --max-overlap --verify-rounds"
ENGINE = "--engine --batch-size --workers --gpus-per-worker --address"
# every flag each command had when its options were written by hand: scripts use them
FLAGS = {
    "classify": f"--vocab --out --preset {SELECTION} --overwrite --max-pixels {ENGINE} {CLIP}",
    "generate": (f"--labels --vocab {SELECTION} --out --save-scores --overlay --overwrite --max-pixels {LABELER} "
                 f"{ENGINE} {CLIP}"),
    "tune": f"--masks --classes --out --holdout --workers --rounds --methods {LABELER} {CLIP}",
    "evaluate": "--pred --gt --classes --json --allow-missing",
    "train": ("--out --images --architecture --epochs --max-minutes --batch-size --lr --backbone-lr-scale "
              "--input-size --crop-size --top-k --rank-norm --no-rank-norm --holdout-labels --val-fraction "
              "--val-masks --corrected --precision --workers --seed --weight-decay --warmup-fraction --grad-clip "
              "--scale-range "
              f"--multilabel-weight --given-labels-fraction --checkpoint-minutes --max-pixels --rounds --round-start "
              f"--round-ignore-threshold {CLIP}"),
    "predict": (f"--out --labels --top-k --vocab --device --save-scores --overlay --overwrite --max-pixels --round "
                f"{ENGINE}"),
    "video": ("--out --labels --key-masks --key-interval --checkpoint --flow --dis-preset --flow-size "
              "--min-confidence --flagged-min-confidence --refine --no-refine --overlay --overwrite --max-pixels "
              f"{LABELER} {CLIP}"),
    "query": f"--out --checkpoint --max-pixels {LABELER} {CLIP}",
    "toy scenes": "--seed --n --out --size --min-objects --max-objects",
    "toy clips": "--seed --n --out --size --min-objects --max-objects --frames",
    "toy train-clip": "--out --minutes --seed --pool-size --supervised-minutes",
    "models": "",
    "review": "--images --out --thumbnail-size --thumbnail-quality --page-size --opacity",
    "export": "--format --out --images --worst --instances --image-root --ignore-as",
    "import": "--format --out --classes",
}


def _commands(group: click.Group = main, path: tuple[str, ...] = ()):
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


def _flags(command: click.Command) -> set[str]:
    return {opt for param in command.params if isinstance(param, click.Option)
            for opt in param.opts + param.secondary_opts}


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_field_carries_its_help_text(name):
    fields = dataclasses.fields(getattr(importlib.import_module(CONFIGS[name]), name))
    assert fields and all(field.metadata.get("help", "").strip() for field in fields), name


def test_every_flag_is_kept_and_every_command_with_config_options_takes_a_config_file():
    commands = dict(_commands())
    assert set(commands) == {tuple(name.split()) for name in FLAGS}
    for path, command in commands.items():
        flags = _flags(command)
        has_config_options = any(isinstance(param, cli.FieldOption) for param in command.params)
        assert flags - {"--config", "--help"} == set(FLAGS[" ".join(path)].split()), path
        assert ("--config" in flags) == has_config_options, path
        assert all(param.help for param in command.params if isinstance(param, click.Option)), path


@pytest.mark.parametrize("path", list(dict(_commands())), ids=" ".join)
def test_help_lists_every_option(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    command = dict(_commands())[path]
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.opts[0] in result.output, (path, param.opts)


def test_the_installed_command_lists_the_generated_options():
    result = subprocess.run([sys.executable, "-m", "freelabel.pipelines.cli", "generate", "--help"],
                            capture_output=True, text=True, check=True)
    assert all(flag in result.stdout for flag in ("--crf-iterations", "--no-flip", "--config", "--vocab"))


def test_a_yaml_config_sets_options_by_option_or_field_name_and_flags_override_it(tmp_path):
    (tmp_path / "world.yaml").write_text("image_size: 48\nmin-objects: 2\nmax_objects: 2\n")
    result = CliRunner().invoke(main, ["toy", "scenes", "--seed", "1", "--n", "1", "--out", str(tmp_path / "out"),
                                       "--config", str(tmp_path / "world.yaml"), "--size", "32"])
    assert result.exit_code == 0, result.output
    world = json.loads((tmp_path / "out" / "config.json").read_text())["world"]
    assert (world["image_size"], world["min_objects"], world["max_objects"]) == (32, 2, 2)


def test_a_json_config_sets_labeler_and_clip_options_and_flags_override_it(tmp_path):
    for i, scene in enumerate(scenes(3, 2)):
        write_image(tmp_path / "images" / f"{i}.png", scene.image)
    (tmp_path / "options.json").write_text(json.dumps({
        "labels": "red circle", "model": "freelabel-toy", "scales": [1, 1.25], "flip": False, "sharpness": 10,
        "crf-iterations": 2, "save_scores": True, "out": str(tmp_path / "ignored")}))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["generate", str(tmp_path / "images"), "--config", str(tmp_path / "options.json"),
                                       "--crf-iterations", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    labeler = manifest["labeler"]
    assert labeler["scales"] == [1.0, 1.25] and labeler["flip"] is False and labeler["sharpness"] == 10
    assert labeler["crf"]["iterations"] == 1 and manifest["config"]["clip"]["model"] == "freelabel-toy"
    assert manifest["config"]["save_scores"] is True and (out / "scores").is_dir()
    assert not (tmp_path / "ignored").exists()


def test_map_method_and_pamr_flags_reach_the_labeler(tmp_path):
    write_image(tmp_path / "images" / "a.png", next(scenes(3, 1)).image)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["generate", str(tmp_path / "images"), "--labels", "red circle", "--out",
                                       str(out), "--model", "test-tiny-vit", "--pretrained", "random", "--method",
                                       "naclip", "--gaussian-std", "2", "--feature-surgery", "--pamr-iterations", "2",
                                       "--pamr-dilations", "4,8", "--no-crf"])
    assert result.exit_code == 0, result.output
    labeler = json.loads((out / "manifest.json").read_text())["labeler"]
    assert (labeler["method"], labeler["gaussian_std"], labeler["feature_surgery"]) == ("naclip", 2.0, True)
    assert labeler["pamr"] == {"iterations": 2, "dilations": [4, 8]} and labeler["crf"] is None


@pytest.mark.parametrize("name, text, message", [
    ("unknown.json", '{"labels": "cat", "sharpnes": 3}', "unknown option(s) sharpnes"),
    ("argument.yaml", "labels: cat\nimages: somewhere\n", "unknown option(s) images"),
    # a field name of one option only (not "iterations": the CRF and PAMR both have one)
    ("twice.json", '{"labels": "cat", "crf_bilateral_srgb": 2, "bilateral_srgb": 3}',
     "bilateral_srgb, crf_bilateral_srgb"),
    ("list.json", '["cat"]', "mapping"),
    ("broken.yaml", "labels: [cat\n", "not valid YAML"),
    ("broken.json", '{"labels": "cat",}', "not valid JSON"),
    ("value.json", '{"labels": "cat", "crf_iterations": "many"}', "--crf-iterations"),
    ("choice.yaml", "labels: cat\nfusion: median\n", "--fusion"),
], ids=lambda v: v if str(v).endswith((".json", ".yaml")) else "")
def test_a_bad_config_file_is_one_error_line_before_any_work(tmp_path, name, text, message):
    write_image(tmp_path / "images" / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / name).write_text(text)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["generate", str(tmp_path / "images"), "--out", str(out), "--model",
                                       "freelabel-toy", "--config", str(tmp_path / name)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and message in result.output, result.output
    assert sum(line.startswith("Error:") for line in result.output.splitlines()) == 1, result.output
    assert not out.exists()
