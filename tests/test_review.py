"""The review page: its data from any freelabel output folder, and the page itself in headless Chromium."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from browser import chromium_paths, headless_chromium
from freelabel.exchange import read_label_folder
from freelabel.io.files import read_json, write_json
from freelabel.io.labels import write_classes
from freelabel.io.masks import IGNORE_INDEX, blend_mask, read_mask, write_mask
from freelabel.io.overlay import legend, overlay_thumbnail, overlay_with_legend
from freelabel.review import ReviewConfig, write_review
from labelfolders import CLASSES, make_label_folder


def page_data(index: Path) -> dict:
    text = (index.parent / "data.js").read_text()
    return json.loads(text[text.index("=") + 1:].rstrip().rstrip(";"))


def test_overlay_thumbnail_is_blend_mask_at_full_size_and_legend_names_classes():
    rng = np.random.default_rng(0)
    image = (rng.random((30, 50, 3)) * 255).astype(np.uint8)
    mask = rng.integers(0, 4, (30, 50)).astype(np.uint8)
    mask[:3] = IGNORE_INDEX
    assert np.array_equal(overlay_thumbnail(image, mask, 50), blend_mask(image, mask))
    small = overlay_thumbnail(image, mask, 10)
    assert small.shape == (6, 10, 3)
    strip = legend(CLASSES, [1, 2, IGNORE_INDEX], 50)
    assert strip.shape[0] % 16 == 0 and strip.shape[1] >= 50 and (strip != 255).any()
    with_legend = overlay_with_legend(image, mask, CLASSES)
    assert np.array_equal(with_legend[:30, :50], blend_mask(image, mask)) and with_legend.shape[0] > 30


def test_review_data_from_a_generate_folder(tmp_path):
    folder = read_label_folder(make_label_folder(tmp_path))
    index = write_review(folder)
    data = page_data(index)
    assert index == folder.root / "review" / "index.html"
    assert data["names"] == [item.name for item in folder.items]
    assert all((index.parent / "thumbs" / f"{n}.jpg").is_file() for n in range(len(folder.items)))
    assert all((index.parent / url).is_file() for url in data["images"] + data["masks"])
    manifest = read_json(folder.root / "manifest.json")["images"]
    assert data["ignored"] == [manifest[name]["ignored_fraction"] for name in data["names"]]
    assert data["scores"] == [manifest[name]["label_scores"] for name in data["names"]]
    assert [[CLASSES[i] for i in labels] for labels in data["labels"]] == [manifest[n]["labels"] for n in data["names"]]
    masks = [read_mask(item.mask) for item in folder.items]
    for row in data["summary"]:
        showing = [m for m in masks if (m == row["class"]).any()]
        assert row["images"] == len(showing)
        if showing:
            assert row["mean_area"] == pytest.approx(np.mean([(m == row["class"]).mean() for m in showing]), abs=1e-4)


def test_review_data_from_video_frames_without_labels(tmp_path):
    """A ``video`` output of a video file: frames are decoded into the page, the mask's classes stand for labels."""
    video, out = tmp_path / "clip.mp4", tmp_path / "out"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (32, 24))
    for k in range(3):
        writer.write(np.full((24, 32, 3), 60 * k, np.uint8))
    writer.release()
    entries = {}
    for k in range(3):
        mask = np.zeros((24, 32), np.uint8)
        mask[k:k + 8, :10] = 2
        write_mask(out / f"frame_{k:06d}.png", mask)
        entries[f"frame_{k:06d}.png"] = {"status": "done", "key": k != 1, "ignored_fraction": 0.0}
    write_classes(out / "classes.txt", CLASSES)
    write_json(out / "manifest.json", {"frames": str(video), "images": entries})
    index = write_review(read_label_folder(out))
    data = page_data(index)
    assert data["keys"] == [True, False, True] and data["labels"] == [[2], [2], [2]]
    assert all((index.parent / url).is_file() for url in data["images"])


@pytest.fixture(scope="module")
def browser():
    if chromium_paths() is None:
        message = "chromium and chromium-driver are not installed (setup.sh installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI must have them")
        pytest.skip(message)
    driver = headless_chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = read_label_folder(make_label_folder(tmp_path_factory.mktemp("review"), n=9))
    return folder, write_review(folder, config=ReviewConfig(page_size=4))


def cells(driver) -> list[tuple[str, str]]:
    return [(cell.get_attribute("data-index"), cell.find_element("css selector", ".name").text)
            for cell in driver.find_elements("css selector", "#grid .cell")]


def console_errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_page_in_chromium(browser, page):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    folder, index = page
    data = page_data(index)
    browser.get(index.as_uri())
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return window.REVIEW_TIMING.images !== undefined"))
    assert all(browser.execute_script("return [...document.querySelectorAll('#grid img')]"
                                      ".every(img => img.complete && img.naturalWidth > 0)") for _ in [0])

    # every image is listed, worst (most ignored) first, four per page
    listed = []
    while True:
        listed += cells(browser)
        if not browser.find_element("id", "next").is_enabled():
            break
        browser.find_element("id", "next").click()
    assert len(listed) == len(folder.items) and {int(i) for i, _ in listed} == set(range(len(folder.items)))
    ignored = [data["ignored"][int(i)] for i, _ in listed]
    assert ignored == sorted(ignored, reverse=True) and ignored[0] > ignored[-1]
    assert "of 9 images" in browser.find_element("id", "page-info").text
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_LEFT)
    assert "page 2 /" in browser.find_element("id", "page-info").text  # the keyboard turns pages

    # other orders: name, and the lowest label score
    Select(browser.find_element("id", "sort")).select_by_value("name")
    names = [name for _, name in cells(browser)]
    assert names == sorted(data["names"])[:4]
    Select(browser.find_element("id", "sort")).select_by_value("score")
    lowest = [min(data["scores"][int(i)]) for i, _ in cells(browser)]
    assert lowest == sorted(lowest) and lowest[0] == min(min(s) for s in data["scores"])

    # filter by a label: only images showing it, all of them
    label = CLASSES.index("blue circle")
    Select(browser.find_element("id", "filter")).select_by_value(str(label))
    expected = {n for n in range(len(folder.items)) if (read_mask(folder.items[n].mask) == label).any()
                or label in data["labels"][n]}
    shown = browser.find_element("id", "page-info").text
    assert f"{len(expected)} of 9 images" in shown and {int(i) for i, _ in cells(browser)} <= expected
    Select(browser.find_element("id", "filter")).select_by_value("")
    Select(browser.find_element("id", "sort")).select_by_value("ignored")

    # a click opens the full view: image, mask and overlay, labels and scores; keys move and close it
    first = browser.find_elements("css selector", "#grid .cell")[0]
    name = first.find_element("css selector", ".name").text
    first.click()
    viewer = browser.find_element("id", "viewer")
    assert viewer.is_displayed() and name in browser.find_element("id", "view-title").text
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "return ['view-image', 'view-mask'].every(id => document.getElementById(id).naturalWidth > 0)"))
    info = browser.find_element("id", "view-info").text
    item = folder.items[[it.name for it in folder.items].index(name)]
    assert all(label in info for label in item.entry["labels"]) and "score" in info
    layers = browser.find_element("css selector", "#viewer .layers")
    for key, mode in (("m", "mask"), ("i", "image"), ("o", "overlay")):
        browser.find_element("tag name", "body").send_keys(key)
        assert layers.get_attribute("class") == f"layers {mode}"
    assert browser.find_element("id", "view-mask").value_of_css_property("opacity") == "0.5"
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_RIGHT)
    assert name not in browser.find_element("id", "view-title").text
    browser.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    assert not viewer.is_displayed()
    assert console_errors(browser) == []


def test_review_lists_an_unreadable_image_and_reads_an_import_output(tmp_path):
    out = make_label_folder(tmp_path)
    (tmp_path / "images" / "002.png").unlink()
    data = page_data(write_review(read_label_folder(out)))
    n = data["names"].index("002.png")
    assert data["images"][n] is None and data["problems"][0][0] == n and "002.png" in data["problems"][0][1]
    assert len(data["names"]) == 6 and (out / "review" / "thumbs" / f"{n}.jpg").is_file()

    from freelabel.exchange import export_cvat, import_cvat

    export_cvat(read_label_folder(out), tmp_path / "cvat")
    back = import_cvat(tmp_path / "cvat", tmp_path / "back")
    data = page_data(write_review(read_label_folder(back, tmp_path / "images")))
    assert data["names"] == ["000.png", "002.png", "003.png", "004.png", "005.png", "sub/001.png"]
    assert data["images"][1] is None  # 002's image is gone
    assert data["images"][-1].endswith("images/sub/001.jpg") and data["ignored"][0] > 0
