"""The review, export and import commands as a user runs them: generate on the bundled example, look, export,
import back, and the same masks come out; mistakes are one Error line and exit 2."""

import numpy as np
import pytest
from click.testing import CliRunner

from freelabel.io import read_mask
from freelabel.pipelines.cli import main

EXAMPLE = "examples/toy"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "gen"
    result = CliRunner().invoke(main, ["generate", f"{EXAMPLE}/images", "--labels", f"{EXAMPLE}/labels.json",
                                       "--model", "freelabel-toy", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("fmt,source", [("coco", "annotations.json"), ("cvat", ""), ("labelstudio", "tasks.json")])
def test_export_then_import_gives_back_every_mask(generated, tmp_path, fmt, source):
    runner = CliRunner()
    exported = runner.invoke(main, ["export", str(generated), "--format", fmt, "--out", str(tmp_path / "x")])
    assert exported.exit_code == 0 and "8 masks exported" in exported.output, exported.output
    imported = runner.invoke(main, ["import", str(tmp_path / "x" / source), "--format", fmt, "--out",
                                    str(tmp_path / "back"), "--classes", str(generated / "classes.txt")])
    assert imported.exit_code == 0, imported.output
    for mask in generated.glob("*.png"):
        original, back = read_mask(mask), read_mask(tmp_path / "back" / mask.name)
        assert np.array_equal(original, back), mask.name
    assert (tmp_path / "back" / "classes.txt").read_text() == (generated / "classes.txt").read_text()


def test_review_writes_the_page_and_refuses_bad_settings_in_one_line(generated, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["review", str(generated), "--out", str(tmp_path / "page"), "--page-size", "4"])
    assert result.exit_code == 0 and (tmp_path / "page" / "index.html").is_file(), result.output
    assert len(list((tmp_path / "page" / "thumbs").iterdir())) == 8
    bad = runner.invoke(main, ["review", str(generated), "--out", str(tmp_path / "bad"), "--page-size", "0"])
    assert bad.exit_code == 2 and bad.output.count("Error:") == 1 and "Traceback" not in bad.output
    assert not (tmp_path / "bad").exists()


def test_generate_overlay_draws_each_mask_with_its_legend_and_resumes(tmp_path):
    from freelabel.io import read_image
    from freelabel.io.overlay import overlay_with_legend

    out = tmp_path / "gen"
    command = ["generate", f"{EXAMPLE}/images", "--labels", f"{EXAMPLE}/labels.json", "--model", "freelabel-toy",
               "--out", str(out), "--overlay"]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    classes = [line.split(" ", 1)[1] for line in (out / "classes.txt").read_text().splitlines()]
    for mask_path in out.glob("*.png"):
        image = read_image(f"{EXAMPLE}/images/{mask_path.name}")
        expected = overlay_with_legend(image, read_mask(mask_path), classes)
        assert np.array_equal(read_image(out / "overlays" / mask_path.name), expected), mask_path.name
    assert len(list((out / "overlays").glob("*.png"))) == 8
    rerun = CliRunner().invoke(main, command)
    assert rerun.exit_code == 0 and "0 masks written, 8 skipped" in rerun.output, rerun.output
