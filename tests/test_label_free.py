"""Label-free selection over a vocabulary, the text-embedding disk cache and truncated-context text encoding."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from freelabel.pipelines.cli import main
from conftest import TEST_MODELS
from freelabel.cards import Preset, read_preset, write_preset
from freelabel.clip.loading import TOY_MODEL, load_clip
from freelabel.clip.text import encode_prompts, truncatable
from freelabel.errors import ConfigError, FreelabelError
from freelabel.io import read_vocabulary, write_image
from freelabel.pseudo.config import LabelerConfig, SelectionConfig
from freelabel.pseudo.labeler import Labeler
from freelabel.segmentation import Segmentation
from freelabel.pseudo.select import (LabelSelector, check_labels, choose_labels, encode_vocabulary,
                                     find_regions, region_view)
from freelabel.toy.world import scenes


def _two_squares():
    image = np.full((64, 96, 3), 90, np.uint8)
    image[8:28, 10:30] = (220, 30, 30)
    image[36:60, 60:84] = (30, 60, 220)
    return image


def test_selection_respects_k_threshold_and_one_label_per_object():
    probabilities = np.array([[0.2, 0.9, 0.6, 0.95],  # the whole image
                              [0.1, 0.95, 0.0, 0.1],   # region 0
                              [0.0, 0.0, 0.7, 0.96]])  # region 1
    left, right = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    left[:, :2], right[:, 2:] = True, True
    regions = [left, right]
    assert choose_labels(probabilities, regions, 2, 0.0, None) == [3, 1]
    assert choose_labels(probabilities, regions, 4, 0.5, None) == [3, 1, 2]
    assert choose_labels(probabilities, regions, 3, 0.99, None) == []
    # class 2 is seen only where the better class 3 is (region 1): one object, one label
    assert choose_labels(probabilities, regions, 4, 0.5, 0.7) == [3, 1]
    assert choose_labels(probabilities, [left, left], 4, 0.5, 1.0) == [3, 1, 2]  # 1.0 = never dropped


def test_vocabulary_synonyms_merge_into_one_class(tmp_path):
    (tmp_path / "vocab.txt").write_text("person, people, human\ncat\n# a comment\ndog,  hound\ncat, kitty\n")
    vocabulary = read_vocabulary(str(tmp_path / "vocab.txt"))
    assert vocabulary == [("person", "people", "human"), ("cat",), ("dog", "hound")]
    assert read_vocabulary("cat,dog") == [("cat",), ("dog",)]  # inline: no synonyms
    (tmp_path / "bad.txt").write_text("cat\nbackground, bg\n")
    with pytest.raises(FreelabelError, match="background"):
        read_vocabulary(str(tmp_path / "bad.txt"))
    clip = load_clip("test-tiny-vit", "random", text_cache="off")
    merged = encode_vocabulary(clip, vocabulary)
    names = clip.encode_labels(["person", "people", "human"])
    assert merged.shape == (3, names.shape[1])
    assert torch.allclose(merged[0], torch.nn.functional.normalize(names.mean(0), dim=0), atol=1e-6)
    assert torch.allclose(merged[1], clip.encode_labels(["cat"])[0], atol=1e-6)


def test_regions_find_separate_objects_and_views_paint_the_rest():
    image = _two_squares()
    regions = find_regions(image, SelectionConfig(min_area=0.02, max_area=0.5))
    assert regions and all(r.shape == image.shape[:2] and r.dtype == bool for r in regions)
    smaller = find_regions(image, SelectionConfig(min_area=0.02, max_area=0.5, region_size=32))
    assert smaller and all(r.shape == (32, 48) for r in smaller)  # found at a 32 px short side
    for top, left, side in ((8, 10, 20), (36, 60, 24)):
        square = np.zeros(image.shape[:2], bool)
        square[top:top + side, left:left + side] = True
        best = max(((r & square).sum() / (r | square).sum()) for r in regions)
        assert best > 0.8
    assert not find_regions(image, SelectionConfig(min_area=0.9, max_area=1.0))  # area limits apply
    for region in (regions[0], smaller[0]):
        view = region_view(image, region, (1, 2, 3))
        assert view.shape == (64, 64, 3) and view.dtype == np.uint8
        assert (view == (1, 2, 3)).all(axis=-1).any()


def test_selector_scores_every_class_and_selects_by_k_and_threshold():
    clip = load_clip("test-tiny-vit", "random", text_cache="off")
    selector = LabelSelector(Labeler(clip), SelectionConfig(top_k=2, min_score=0.0, max_overlap=None, verify_rounds=0))
    with pytest.raises(ValueError):
        selector.select(_two_squares())
    selector.set_vocabulary(["red square", ("blue square", "blue box"), "cat"])
    probabilities, regions = selector.view_probabilities(_two_squares())
    assert probabilities.shape == (1 + len(regions), 3) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    selection = selector.select(_two_squares())
    scores = selection.scores
    assert scores.shape == (3,) and np.allclose(scores, probabilities.max(0))
    assert [name for name, _ in selection.labels] == [selector.names[i] for i in np.argsort(-scores)[:2]]
    selector.config = SelectionConfig(min_score=min(1.0, float(scores.max()) + 1e-3))
    assert not selector.select(_two_squares()).labels


def test_check_labels_keeps_replaces_and_spares_unchecked_labels():
    rows = np.array([[0.05, 0.05, 0.9, 0.0],  # label 0's region is class 2 for sure
                     [0.0, 0.5, 0.3, 0.2],    # label 1's region is itself
                     [np.nan] * 4,           # label 3's region was too small to check
                     [0.02, 0.08, 0.1, 0.8]])  # label 3 again: kept once
    assert check_labels([0, 1, 3, 3], rows, 0.1, 0.9) == [2, 1, 3]
    assert check_labels([0, 1, 3, 3], rows, 0.1, None) == [1, 3]  # no relabelling: label 0 just goes
    assert check_labels([0, 1], rows[:2], 0.01, 0.95) == [0, 1]  # a low bar keeps both; nothing sure enough to add


class _ColourLabeler:
    """A stand-in labeler: a label's mask is wherever its colour word's colour is in the image."""

    colours = {"red": (220, 30, 30), "blue": (30, 60, 220)}

    def __init__(self):
        self.clip = load_clip("test-tiny-vit", "random", text_cache="off")
        self.calls = []

    def set_image(self, image):
        self.image = image

    def segment(self, labels):
        self.calls.append(list(labels))
        mask = np.zeros(self.image.shape[:2], np.uint8)
        for k, label in enumerate(labels):
            if label.split()[0] in self.colours:
                mask[(self.image == self.colours[label.split()[0]]).all(-1)] = k + 1
        return Segmentation(list(labels), None, None, mask)


def test_selected_labels_are_checked_against_their_own_masks(monkeypatch):
    vocabulary = ["red square", "red circle", "blue square", "cat"]
    labeler = _ColourLabeler()
    selector = LabelSelector(labeler, SelectionConfig())
    selector.set_vocabulary(vocabulary)

    def classify_views(views):  # a red region is surely a red square; a blue one is probably a blue square
        return np.array([[0.95, 0.05, 0, 0] if (view == (220, 30, 30)).all(-1).any() else [0, 0, 0.6, 0.4]
                         for view in views], np.float32)

    monkeypatch.setattr(selector, "classify_views", classify_views)
    kept, best = selector.verify(_two_squares(), [1, 2, 3])
    # "red circle" is replaced by what its region shows, "blue square" stays, "cat" (no mask to check) stays
    assert kept == [0, 2, 3]
    assert labeler.calls == [["red circle", "blue square", "cat"], ["red square", "blue square", "cat"]]
    assert np.allclose(best, [0.95, 0.05, 0.6, 0.4])
    selector.config = SelectionConfig(verify_rounds=1, verify_min_score=0.7, relabel_min_score=None)
    assert selector.verify(_two_squares(), [1, 2, 3])[0] == [3]


@pytest.mark.parametrize("values", [{"top_k": 0}, {"min_score": 1.5}, {"min_area": 0.7, "max_area": 0.6},
                                    {"region_scales": (0,)}, {"fill": (0, 0, 300)}, {"region_size": 2},
                                    {"max_overlap": 1.5}, {"verify_rounds": -1}, {"verify_min_score": 1.2},
                                    {"relabel_min_score": -0.1}, {"verify_min_area": 2.0}])
def test_bad_selection_settings_are_config_errors(values):
    with pytest.raises(ConfigError):
        SelectionConfig(**values)


def test_presets_carry_their_selection_settings(tmp_path):
    write_preset(tmp_path / "p.json", Preset(LabelerConfig(), {"name": "x"}, SelectionConfig(top_k=2)))
    assert read_preset(tmp_path / "p.json").selection.top_k == 2
    content = json.loads((tmp_path / "p.json").read_text())
    del content["selection"]  # presets written before selection existed get the defaults
    (tmp_path / "old.json").write_text(json.dumps(content))
    assert read_preset(tmp_path / "old.json").selection == SelectionConfig()
    content["selection"] = {"top_k": -1}
    (tmp_path / "bad.json").write_text(json.dumps(content))
    with pytest.raises(ConfigError, match="bad.json"):
        read_preset(tmp_path / "bad.json")


# --- text encoding ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [*TEST_MODELS, TOY_MODEL])
def test_truncated_context_gives_the_full_context_embeddings(name):
    clip = load_clip(name, None if name == TOY_MODEL else "random", text_cache="off")
    prompts = ["a", "a photo of a striped blue triangle.", "ünïcödé 猫", "x " * 200]
    tokens = clip.tokenizer(prompts)
    assert truncatable(clip.model)
    assert torch.allclose(encode_prompts(clip.model, tokens), clip.model.encode_text(tokens).float(), atol=1e-5)
    short = clip.tokenizer(prompts[:2])
    assert torch.allclose(encode_prompts(clip.model, short), clip.model.encode_text(short).float(), atol=1e-5)


def test_towers_that_are_not_causal_keep_the_full_context(monkeypatch):
    clip = load_clip("test-tiny-vit", "random", text_cache="off")
    monkeypatch.setattr(clip.model, "text_pool_type", "last")  # pooling at the last position sees the padding
    assert not truncatable(clip.model)
    tokens = clip.tokenizer(["a cat"])
    assert torch.equal(encode_prompts(clip.model, tokens), clip.model.encode_text(tokens).float())


def _text_passes(clip):
    """A list that grows by one per text-tower pass."""
    calls = []
    clip.model.token_embedding.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_disk_cache_hits_skip_the_text_tower_and_bad_entries_are_rebuilt(tmp_path):
    labels = ["cat", "dog", "a much longer label"]
    first = load_clip("test-tiny-vit", "random", text_cache=tmp_path)
    expected = first.encode_labels(labels)
    shards = list(tmp_path.rglob("*.safetensors"))
    assert len(shards) == 1

    again = load_clip("test-tiny-vit", "random", text_cache=tmp_path)  # a new run: memory cache empty
    passes = _text_passes(again)
    assert torch.allclose(again.encode_labels(labels), expected) and not passes
    assert torch.allclose(again.encode_labels(["cat", "new one"])[0], expected[0]) and len(passes) == 1

    shards[0].write_bytes(b"not a safetensors file")  # corrupt: recomputed, never trusted
    broken = load_clip("test-tiny-vit", "random", text_cache=tmp_path)
    passes = _text_passes(broken)
    assert torch.allclose(broken.encode_labels(labels), expected, atol=1e-6) and passes
    assert not shards[0].exists() or shards[0].read_bytes() != b"not a safetensors file"

    other = load_clip("test-tiny-vit", "random", text_cache=tmp_path)  # other templates: another key
    passes = _text_passes(other)
    other.encode_labels(labels, templates=("{}",))
    assert passes

    with torch.no_grad():  # other weights: another key, so the old embeddings are never served
        trained = load_clip("test-tiny-vit", "random", text_cache=tmp_path)
        trained.model.token_embedding.weight.add_(1.0)
    passes = _text_passes(trained)
    assert not torch.allclose(trained.encode_labels(labels), expected) and passes

    off = load_clip("test-tiny-vit", "random", text_cache="off")
    assert off.text_cache_dir is None


# --- generate --vocab ---------------------------------------------------------------------------------------------

def test_generate_selects_labels_from_a_vocabulary_then_makes_masks(tmp_path):
    images = tmp_path / "images"
    for i, scene in enumerate(scenes(5, 3)):
        write_image(images / f"{i}.png", scene.image)
    (images / "broken.png").write_bytes(b"nope")
    (tmp_path / "vocab.txt").write_text("red circle, red disc\nblue square\ngreen triangle\n")
    args = ["generate", str(images), "--vocab", str(tmp_path / "vocab.txt"), "--out", str(tmp_path / "out"),
            "--model", "test-tiny-vit", "--pretrained", "random", "--no-crf", "--top-k", "2", "--min-score", "0",
            "--max-overlap", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "3 masks written" in result.output, result.output
    selected = json.loads((tmp_path / "out" / "selection" / "labels.json").read_text())
    assert sorted(selected) == ["0.png", "1.png", "2.png"] and all(len(v) == 2 for v in selected.values())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {name: list(scores) for name, scores in manifest["selected"].items()} == selected
    assert manifest["images"]["broken.png"]["status"] == "failed"
    checked = json.loads((tmp_path / "out" / "selection" / "manifest.json").read_text())
    assert checked["labeler"]["crf"] is None  # the labels are checked against generate's own masks (--no-crf)
    for entry in (checked["images"][name] for name in selected):
        assert not set(entry["dropped"]) & set(entry["labels"]) and set(entry["added"]) <= set(entry["labels"])
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in errors] == ["read"]
    classes = (tmp_path / "out" / "classes.txt").read_text().split("\n")
    assert all(label in " ".join(classes) for labels in selected.values() for label in labels)
    # the selection's labels.json is generate's input as it is (a person may correct it first)
    again = CliRunner().invoke(main, ["generate", str(images), "--labels", str(tmp_path / "out" / "selection" /
                                      "labels.json"), "--out", str(tmp_path / "corrected"), "--model",
                                      "test-tiny-vit", "--pretrained", "random", "--no-crf"])
    assert again.exit_code == 0, again.output
    both = CliRunner().invoke(main, args + ["--labels", "cat"])
    assert both.exit_code == 2 and "exactly one of" in both.output


def test_a_rerun_of_generate_with_a_vocabulary_resumes_the_selection_and_the_masks(tmp_path):
    images = tmp_path / "images"
    for i, scene in enumerate(scenes(5, 3)):
        write_image(images / f"{i}.png", scene.image)
    args = ["generate", str(images), "--vocab", "red circle,blue square,green triangle", "--out", str(tmp_path / "out"),
            "--model", "test-tiny-vit", "--pretrained", "random", "--no-crf", "--top-k", "2", "--min-score", "0"]
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "0 masks written, 3 skipped" in again.output, again.output
    selection = json.loads((tmp_path / "out" / "selection" / "manifest.json").read_text())
    assert selection["summary"]["skipped"] == 3


@pytest.mark.parametrize("vocab, message", [("cat,background", "background"), ("", "no labels")])
def test_a_bad_vocabulary_is_one_error_line_before_the_model_loads(tmp_path, vocab, message):
    write_image(tmp_path / "images" / "a.png", np.zeros((16, 16, 3), np.uint8))
    result = CliRunner().invoke(main, ["generate", str(tmp_path / "images"), "--vocab", vocab, "--out",
                                       str(tmp_path / "out"), "--model", "ViT-B-16", "--pretrained", "openai",
                                       "--offline", "--cache-dir", str(tmp_path / "empty")])  # cannot load: unused
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_cache_shard_with_foreign_metadata_is_dropped_not_trusted(tmp_path):
    from safetensors.torch import save_file

    from freelabel.clip.text import TextEmbeddingCache

    cache = TextEmbeddingCache(tmp_path, {"model": "m"})
    cache.folder.mkdir(parents=True)
    for name, labels in (("number", "7"), ("short", '["a"]'), ("objects", '[1, 2]')):
        save_file({"embeddings": torch.zeros(2, 4)}, str(cache.folder / f"{name}.safetensors"),
                  metadata={"key": cache.key, "labels": labels})
    assert cache.get(["a"]) == {} and not list(cache.folder.iterdir())


def test_a_selection_that_fails_costs_its_image_only(tmp_path, monkeypatch):
    images = tmp_path / "images"
    for i, scene in enumerate(scenes(3, 2)):
        write_image(images / f"{i}.png", scene.image)
    write_image(images / "odd.png", np.zeros((40, 48, 3), np.uint8))
    select = LabelSelector.select

    def failing_select(self, image):
        if image.shape[:2] == (40, 48):
            raise RuntimeError("out of memory")
        return select(self, image)

    monkeypatch.setattr(LabelSelector, "select", failing_select)
    result = CliRunner().invoke(main, ["classify", str(images), "--vocab", "red circle,cat", "--out",
                                       str(tmp_path / "out"), "--model", "test-tiny-vit", "--pretrained", "random"])
    assert result.exit_code == 1 and "labelled 2 images, 0 skipped, 1 failed" in result.output, result.output
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [(e["stage"], e["message"]) for e in errors] == [("select", "RuntimeError: out of memory")]
    assert sorted(json.loads((tmp_path / "out" / "labels.json").read_text())) == ["0.png", "1.png"]
