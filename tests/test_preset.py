import json

import pytest

from freelabel.cards import (CARD_DIR as PRESET_DIR, Preset, default_preset, model_preset, read_preset,
                             resolve_preset, write_preset)
from freelabel.clip.loading import TOY_MODEL
from freelabel.errors import ConfigError
from freelabel.pseudo.config import CrfConfig, LabelerConfig
from freelabel.pseudo.labeler import Labeler


def test_a_preset_round_trips_through_json(tmp_path):
    preset = Preset(LabelerConfig(scales=(1.0, 2.0), background_words=("sky",), crf=CrfConfig(iterations=5)),
                    {"name": "mine", "score": 0.5})
    write_preset(tmp_path / "p.json", preset)
    again = read_preset(tmp_path / "p.json")
    assert again.labeler == preset.labeler and again.source["score"] == 0.5
    assert again.labeler.scales == (1.0, 2.0) and isinstance(again.labeler.crf, CrfConfig)


def test_models_without_a_file_get_the_default_preset():
    assert model_preset("ViT-B-16").labeler == LabelerConfig() == default_preset().labeler
    assert model_preset("ViT-B-16").source["name"] == "default"


def test_the_toy_clip_ships_its_own_tuned_preset():
    assert (PRESET_DIR / f"{TOY_MODEL}.json").is_file()
    preset = model_preset(TOY_MODEL)
    assert preset.labeler != LabelerConfig() and preset.source["command"] == "freelabel tune"
    assert preset.source["heldout"]["tuned"]["miou"] > 0 and preset.source["data"]["tuning_images"] >= 200
    assert Labeler(TOY_MODEL).config == preset.labeler  # the façade uses it unless told otherwise


def test_overrides_change_one_field_each():
    start = LabelerConfig()
    changed = start.with_overrides(sharpness=5.0, crf_iterations=7, scales=(1.0,))
    assert changed.sharpness == 5.0 and changed.crf.iterations == 7 and changed.scales == (1.0,)
    assert changed.crf.bilateral_sxy == start.crf.bilateral_sxy and changed.fusion == start.fusion
    assert start.with_overrides(use_crf=False).crf is None
    assert LabelerConfig(crf=None).with_overrides(crf_iterations=2).crf == CrfConfig(iterations=2)


def test_resolve_takes_default_by_name_and_refuses_a_missing_file(tmp_path):
    assert resolve_preset(TOY_MODEL, "default")[0].source["name"] == "default"
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_preset(TOY_MODEL, tmp_path / "missing.json")


def test_resolve_prefers_a_preset_file_over_the_models_own(tmp_path):
    write_preset(tmp_path / "p.json", Preset(LabelerConfig(sharpness=3.0), {"name": "file"}))
    chosen, final = resolve_preset(TOY_MODEL, tmp_path / "p.json", {"ignore_threshold": 0.5})
    assert chosen.source["name"] == "file" and final.sharpness == 3.0 and final.ignore_threshold == 0.5


@pytest.mark.parametrize("content, message", [
    ("not json", "cannot read JSON"),
    (json.dumps({"labeler": {"sharpness": 0}}), "sharpness must be positive"),
    (json.dumps({"labeler": {"colour": 1}}), "unknown labeler settings: colour"),
    (json.dumps({"labeler": {"crf": {"speed": 1}}}), "unknown CRF settings: speed"),
    (json.dumps({"labeler": {"scales": "fast"}}), "p.json"),
    (json.dumps([1, 2]), "not a freelabel preset"),
])
def test_bad_preset_files_name_the_file_and_the_problem(tmp_path, content, message):
    (tmp_path / "p.json").write_text(content)
    with pytest.raises(ConfigError if "JSON" not in message else Exception, match=message):
        read_preset(tmp_path / "p.json")


@pytest.mark.parametrize("field, value", [
    ("method", "magic"), ("fusion", "median"), ("surgery_blocks", -1), ("input_size", 0), ("window", 0),
    ("scales", ()), ("scales", (0.0,)), ("fusion_upsampling", 0), ("softmin_temperature", 0.0), ("sharpness", -1.0),
    ("background_threshold", 1.5), ("ignore_threshold", 2.0), ("background_words", ("",)),
])
def test_every_labeler_field_is_validated(field, value):
    with pytest.raises(ConfigError):
        LabelerConfig(**{field: value})
