"""Free-text queries: one image pass for many texts, per-query errors, the files `freelabel query` writes."""

import json

import numpy as np
from click.testing import CliRunner

from freelabel.pipelines.cli import main
from freelabel.clip.loading import load_clip
from freelabel.io import read_image, read_mask, write_image
from freelabel.pseudo.labeler import Labeler
from freelabel.run.query import query
from freelabel.toy.world import scenes

TINY = ["--model", "test-tiny-vit", "--pretrained", "random", "--no-crf"]
TEXTS = ["red circle", "", "ünïcödé 猫", "a " + "very " * 300 + "long query"]


def test_many_queries_cost_one_image_pass():
    labeler = Labeler(load_clip("test-tiny-vit", "random", text_cache="off"))
    passes = []
    labeler.clip.model.visual.conv1.register_forward_hook(lambda *_: passes.append(1))
    image = next(scenes(2, 1)).image
    query(labeler, image, ["red circle"])
    one = len(passes)
    results = query(labeler, image, TEXTS)
    assert len(passes) == 2 * one  # the same image passes for four texts as for one
    assert [r.text for r in results] == [t.strip() for t in TEXTS]
    assert results[1].error == "empty query" and results[1].mask is None
    for result in (results[0], results[2], results[3]):
        assert result.error is None and result.mask.shape == image.shape[:2] and result.mask.dtype == np.uint8
        assert set(np.unique(result.mask)) <= {0, 1, 255}
        assert result.area == round(float((result.mask == 1).mean()), 5) and 0 <= result.mean_score <= 1


def test_query_command_writes_masks_overlay_and_one_line_per_text(tmp_path):
    image = next(scenes(3, 1)).image
    write_image(tmp_path / "scene.png", image)
    result = CliRunner().invoke(main, ["query", str(tmp_path / "scene.png"), *TEXTS, "--out", str(tmp_path / "out"),
                                       *TINY, "--ignore-threshold", "0"])
    assert result.exit_code == 1 and "1 queries failed" in result.output, result.output
    lines = [json.loads(line) for line in (tmp_path / "out" / "queries.jsonl").read_text().splitlines()]
    assert [line["query"] for line in lines] == [t.strip() for t in TEXTS]
    assert lines[1] == {"query": "", "error": "empty query"}
    masks = [read_mask(tmp_path / "out" / line["mask"]) for line in (lines[0], lines[2], lines[3])]
    assert all(mask.shape == image.shape[:2] for mask in masks)
    overlay = read_image(tmp_path / "out" / "overlay.png")
    answered = np.any([mask == 1 for mask in masks], axis=0)
    assert overlay.shape == image.shape and answered.any()
    assert (overlay != image).any(axis=-1)[answered].mean() > 0.9  # answered pixels are coloured in
    assert json.loads((tmp_path / "out" / "query.json").read_text())["config"]["clip"]["model"] == "test-tiny-vit"
    ok = CliRunner().invoke(main, ["query", str(tmp_path / "scene.png"), "red circle", "--out",
                                   str(tmp_path / "ok"), *TINY])
    assert ok.exit_code == 0, ok.output


def test_query_usage_errors_are_one_line(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    for args in (["query", str(tmp_path / "broken.png"), "cat"], ["query", str(tmp_path / "broken.png")]):
        result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out"), *TINY])
        assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
