"""Model cards: one place for a model's bundled weights, templates, preprocessing and presets."""

import open_clip
import pytest
from click.testing import CliRunner

import freelabel
from freelabel.cards import (CARD_DIR, DEFAULT_TEMPLATES, ModelCard, default_preset, list_models, model_card,
                             register_card)
from freelabel.clip.loading import TOY_MODEL, load_clip
from freelabel.pipelines.cli import main
from freelabel.pseudo.config import LabelerConfig


def test_the_toy_card_holds_every_fact_of_the_toy_model():
    assert freelabel.list_models() == list_models() and TOY_MODEL in list_models()
    card = model_card(TOY_MODEL)
    assert (CARD_DIR / f"{TOY_MODEL}.json").is_file()
    assert card.bundled[0] == "freelabel" and card.bundled[1].is_file() and card.tags()[0] == "freelabel"
    assert card.templates != DEFAULT_TEMPLATES and card.preprocess == {"interpolation": "bilinear",
                                                                       "resize_mode": "squash"}
    assert card.preset.labeler != LabelerConfig() and card.preset.source["file"] == f"package:{TOY_MODEL}.json"
    assert card.train["architecture"] == "rankseg-small" and "chosen_on" in card.train_source


def test_a_model_without_a_card_gets_the_library_defaults():
    card = model_card("ViT-B-16")
    assert card == ModelCard("ViT-B-16") and "ViT-B-16" not in list_models()
    assert card.bundled is None and card.templates == DEFAULT_TEMPLATES and card.preset == default_preset()
    assert card.train == {} and card.tags() == open_clip.list_pretrained_tags_by_model("ViT-B-16")


def test_a_registered_card_decides_templates_and_preprocessing(monkeypatch):
    import freelabel.cards

    monkeypatch.setattr(freelabel.cards, "_CARDS", dict(freelabel.cards._CARDS))
    register_card(ModelCard("test-tiny-vit", templates=("a {} here.",), preprocess={"resize_mode": "longest"}))
    assert "test-tiny-vit" in list_models()
    clip = load_clip("test-tiny-vit", "random", text_cache="off")
    assert clip.templates == ("a {} here.",) and clip.resize_mode == "longest"


def test_freelabel_models_lists_the_cards_and_open_clips_pretrained_weights():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    assert f"  {TOY_MODEL}: " in result.output and "pretrained: freelabel (bundled)" in result.output
    assert "  ViT-B-16: openai, " in result.output


@pytest.mark.parametrize("content, message", [
    ('{"bundled": {"tag": "x"}}', "'bundled' must be"),
    ('{"templates": ["no placeholder"]}', "'templates' must be"),
    ('{"training": {"epochs": 3}}', "not a training preset"),
    ('{"preset": {"labeler": {"colour": 1}}}', "unknown labeler settings: colour"),
])
def test_a_malformed_card_names_the_file_and_the_problem(tmp_path, content, message):
    from freelabel.cards import _read_card
    from freelabel.errors import ConfigError

    path = tmp_path / "some-model.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        _read_card(path)
    assert str(path) in str(info.value)
