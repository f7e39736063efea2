import json

import numpy as np
import pytest

from freelabel.cards import read_preset
from freelabel.errors import ConfigError, FreelabelError
from freelabel.pipelines.toy import write_toy_scenes
from freelabel.pipelines.tune import TuneConfig, split, tune
from freelabel.clip.config import ClipConfig
from freelabel.pseudo.config import LabelerConfig
from freelabel.pseudo.tune import (SELECTION_MIN_SCORE, SELECTION_TOP_K, fit_selection, search_stage,
                                  selection_quality, stage_grids)

TINY = ClipConfig("test-tiny-vit", "random")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_scenes(tmp_path_factory.mktemp("toy"), seed=11, n=6)


def _tune(toy, out, **config):
    return tune(toy / "images", toy / "masks", toy / "classes.txt", out,
                TuneConfig(**{"clip": TINY, "workers": 1, "holdout": 0.34, "rounds": 2, **config}))


def test_split_holds_out_an_even_spread():
    tuning, heldout = split(list(range(10)), 0.3)
    assert heldout == [3, 6, 9] and len(tuning) == 7


def _score_by_sharpness(miou_by_sharpness):
    """A stand-in scorer: one class whose IoU is the wanted value for each config's sharpness (default 0.5)."""
    def score(configs):
        rows = []
        for config in configs:
            hits = int(100 * miou_by_sharpness.get(config.sharpness, 0.5))
            counts = np.array([[hits, 100 - hits]])  # (C=1, C + 1): right, predicted ignore
            rows.append({"mask": counts, "dense": counts})
        return rows
    return score


def test_search_stage_keeps_the_best_and_ties_keep_the_current():
    start = LabelerConfig()
    grid = [dict(sharpness=5.0), dict(sharpness=7.0), dict(sharpness=9.0)]
    best, rows = search_stage(start, grid, _score_by_sharpness({7.0: 0.9, 9.0: 0.8}))
    assert best.sharpness == 7.0 and len(rows) == 4 and rows[0][0] == {"current": True}
    assert [r[1]["miou"] for r in rows] == [0.5, 0.5, 0.9, 0.8]
    best, _ = search_stage(start, grid, _score_by_sharpness({}))  # all equal: the current settings stay
    assert best == start


def test_the_stages_search_every_map_method_and_each_refinement():
    grids = stage_grids(12)
    configs = {stage: [LabelerConfig().with_overrides(**overrides) for overrides in grid]
               for stage, grid in grids.items()}
    assert {c.method for c in configs["maps"]} == {"surgery", "naclip", "sclip", "clearclip", "relevance"}
    assert {c.surgery_blocks for c in configs["maps"] if c.method == "surgery"} == {3, 6, 9, 12}
    assert len({c.gaussian_std for c in configs["maps"] if c.method == "naclip"}) > 1
    assert {c.feature_surgery for c in configs["maps"] if c.method != "relevance"} == {True, False}
    assert {c.pamr is None for c in configs["pamr"]} == {True, False}  # PAMR off, or on with a grid
    assert {c.crf is None for c in configs["crf"]} == {True, False}
    assert list(grids).index("pamr") < list(grids).index("crf")


def test_the_maps_stage_can_search_some_methods_only():
    grids, only = stage_grids(12), stage_grids(12, ("naclip", "relevance"))
    assert {grid["method"] for grid in only["maps"]} == {"naclip", "relevance"}
    assert only["maps"] == [g for g in grids["maps"] if g["method"] in ("naclip", "relevance")]
    assert {stage: grid for stage, grid in only.items() if stage != "maps"} == {
        stage: grid for stage, grid in grids.items() if stage != "maps"}


@pytest.mark.parametrize("methods", [(), ("surgery", "nope")])
def test_tune_checks_the_methods(methods):
    with pytest.raises(ConfigError, match="methods must be one or more of"):
        TuneConfig(methods=methods)


def test_tune_searches_the_methods_asked_even_from_a_preset_with_another(toy, tmp_path):
    preset = _tune(toy, tmp_path / "p.json", rounds=1, methods=["clearclip"], overrides={"method": "surgery"})
    assert preset.labeler.method == "clearclip"
    progress = json.loads((tmp_path / "p.json.progress.json").read_text())
    assert {row["settings"].get("method", "clearclip") for row in progress["stages"]["maps"]["top"]} == {"clearclip"}


def test_tune_writes_a_preset_with_a_held_out_report_and_resumes(toy, tmp_path):
    preset = _tune(toy, tmp_path / "p.json")
    source = preset.source
    assert read_preset(tmp_path / "p.json").labeler == preset.labeler
    assert source["data"]["tuning_images"] == 4 and source["data"]["heldout_images"] == 2
    assert source["data"]["seed"] == 11
    assert set(source["stages"]) == {*stage_grids(2), *(f"{n}@2" for n in stage_grids(2))}
    # (the mask's mIoU may exceed the dense argmax's: a wrong pixel set to ignore is no false positive any more)
    for scores in (source["tuning"], source["heldout"]["start"], source["heldout"]["tuned"]):
        assert all(0 <= scores[key] <= 1 for key in ("miou", "dense_miou", "ignored_fraction"))
    # the label-free selection's top_k and min_score are fitted too, and reported on the held-out images
    selection = source["selection"]
    assert (preset.selection.top_k, preset.selection.min_score) in {(k, s) for k in SELECTION_TOP_K
                                                                    for s in SELECTION_MIN_SCORE}
    assert read_preset(tmp_path / "p.json").selection == preset.selection
    for quality in (selection["tuning"], selection["heldout"]["start"], selection["heldout"]["tuned"]):
        assert set(quality) == {"precision", "recall", "f1"} and all(0 <= v <= 1 for v in quality.values())
    # a run killed after the second round's background stage resumes with its CRF stage only and ends the same
    progress_path = tmp_path / "p.json.progress.json"
    progress = json.loads(progress_path.read_text())
    del progress["stages"]["crf@2"]
    progress["stages"]["background@2"]["top"] = "kept as it was"  # proves the finished stage is not rerun
    progress_path.write_text(json.dumps(progress))
    again = _tune(toy, tmp_path / "p.json")
    assert again.labeler == preset.labeler
    assert json.loads(progress_path.read_text())["stages"]["background@2"]["top"] == "kept as it was"
    with pytest.raises(FreelabelError, match="other inputs"):
        _tune(toy, tmp_path / "p.json", overrides={"sharpness": 3.0})


def test_tune_needs_labelled_images(toy, tmp_path):
    with pytest.raises(FreelabelError, match="0 to tune on and 0 held out"):
        tune(toy / "images", tmp_path, toy / "classes.txt", tmp_path / "p.json", TuneConfig(clip=TINY, workers=1))


@pytest.mark.slow
def test_parallel_workers_score_like_one(toy, tmp_path):
    one = _tune(toy, tmp_path / "one.json")
    two = _tune(toy, tmp_path / "two.json", workers=2)
    assert one.labeler == two.labeler and one.source["heldout"] == two.source["heldout"]


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_model_fails_the_search_instead_of_hanging(toy):
    from freelabel.clip.loading import UnknownModelError
    from freelabel.pipelines.tune import labelled_images
    from freelabel.pseudo.tune import ParallelScorer
    from freelabel.io import read_classes

    classes = read_classes(toy / "classes.txt")
    images = [item for _, item in labelled_images(toy / "images", toy / "masks", classes)]
    with ParallelScorer(ClipConfig("no-such-model", "random"), workers=2) as scorer:
        with pytest.raises(UnknownModelError):
            scorer.score([LabelerConfig()], images, classes)


def test_selection_fit_picks_the_best_f1_and_measures_it():
    targets = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0]], bool)
    scores = np.array([[0.9, 0.7, 0.3, 0.1], [0.95, 0.2, 0.15, 0.1], [0.1, 0.8, 0.75, 0.5]])
    views = [(row[None], []) for row in scores]  # the whole image only: no regions
    assert selection_quality(views, targets, 1, 0.0, 0.7) == {"precision": 1.0, "recall": 0.6, "f1": 0.75}
    top_k, min_score, quality = fit_selection(views, targets, 0.7)
    assert quality["f1"] == 1.0 and top_k == 2 and 0.3 < min_score <= 0.7
    assert selection_quality(views, targets, top_k, min_score, 0.7) == quality
