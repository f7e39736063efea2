"""A corpus of bad and odd inputs, built by the test, through ``freelabel generate --model freelabel-toy``.

One image folder mixes good toy scenes with broken files (a decompression bomb, truncated and empty files, a text
file named .jpg, a dangling link, a link loop), odd-but-legal images (16-bit, CMYK, palette with transparency, LA,
RGBA, 1-bit, float TIFF, EXIF-rotated, 1x1, a 20000x20 strip, ...) and bad labels (empty, newline, NUL,
"background", too long). The run must fail only the bad items (exit code 1, each in errors.jsonl with its stage),
process the odd ones correctly, skip images without labels, ignore hidden files and label entries without a file,
and leave the good images' outputs byte-identical to a run on the good images alone. Mistakes in the inputs as a
whole (two images that would write one mask, malformed CSV) are usage errors: exit code 2, one ``Error:`` line,
nothing written.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from freelabel.pipelines.cli import main
from freelabel.io import read_classes, read_image, read_mask, write_image
from freelabel.io.images import ImageReadError
from freelabel.toy.world import scenes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FREELABEL = ROOT / ".venv" / "bin" / "freelabel"
ARGS = ["--model", "freelabel-toy", "--save-scores"]
N_GOOD = 4
SEED = 4321
PEAK_RSS_LIMIT = 2.5e9  # bytes


# ---------------------------------------------------------------------------------------------------- the corpus

def _good_scenes():
    return list(scenes(SEED, N_GOOD + 2))


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png(width: int, height: int, mode: str = "RGB") -> bytes:
    """A 1x1 PNG whose IHDR header claims width x height: tiny on disk, huge if decoded."""
    data = bytearray(_png_bytes(Image.new(mode, (1, 1))))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


@dataclass(frozen=True)
class Kind:
    """One kind of input: where it lives in the folder, its labels.json entry, what the run must do with it."""

    kind: str
    path: str  # relative to the image folder
    expect: str  # "read" / "labels" (failed at that stage), "done", "skipped", "ignored"
    labels: list | None = None  # its labels.json entry; None = none
    message: tuple[str, ...] = ()  # substrings of the errors.jsonl message (case-insensitive)
    shape: tuple[int, int] | None = None  # the mask's (H, W) for "done"
    same_mask_as: str | None = None  # "done": its mask is byte-identical to this image's mask


# Good scenes 000000.png .. 000003.png sort before everything else (digits < letters), and odd images only use
# the good scenes' labels, so the global class index (order of first appearance) is the same with or without them.
GOOD = [f"{i:06d}.png" for i in range(N_GOOD)]


def _corpus(labels_of: dict[str, list[str]]) -> list[Kind]:
    a, b = labels_of[GOOD[0]], labels_of[GOOD[1]]
    some = [a[0]]
    return [
        # files that cannot be read: the "read" stage
        Kind("decompression bomb (30000x30000 header)", "bomb.png", "read", some, ("pixels", "limit")),
        Kind("bomb over --max-pixels, under PIL's limit (12000x12000)", "bomb_12k.png", "read", some,
             ("144,000,000 pixels", "limit")),
        Kind("truncated PNG", "truncated.png", "read", some, ("cannot read image",)),
        Kind("truncated JPEG", "truncated_jpeg.jpg", "read", some, ("cannot read image",)),
        Kind("zero-byte .png", "empty.png", "read", some, ("cannot read image",)),
        Kind("text file named .jpg", "notes.jpg", "read", some, ("cannot read image",)),
        Kind("dangling symlink named .png", "dangling.png", "read", some, ("cannot read image",)),
        Kind("directory named .png", "folder.png", "ignored", some),
        # odd but legal images: a mask of the displayed shape
        Kind("20000x20 strip", "strip.png", "done", some, shape=(20, 20000)),
        Kind("16-bit greyscale PNG", "grey16.png", "done", a, shape=(64, 64), same_mask_as="grey8.png"),
        Kind("8-bit greyscale PNG", "grey8.png", "done", a, shape=(64, 64)),
        Kind("16-bit big-endian greyscale TIFF", "grey16be.tif", "done", a, shape=(64, 64),
             same_mask_as="grey8.png"),
        Kind("float32 TIFF", "float32.tif", "done", a, shape=(64, 64), same_mask_as="grey8.png"),
        Kind("LA PNG", "la.png", "done", a, shape=(64, 64), same_mask_as="grey8.png"),
        Kind("JPEG with EXIF orientation 6", "exif6.jpg", "done", a, shape=(64, 40)),
        Kind("CMYK JPEG", "cmyk.jpg", "done", a, shape=(48, 64)),
        Kind("palette PNG with transparency", "palette_trns.png", "done", a, shape=(64, 56)),
        Kind("RGBA PNG", "rgba.png", "done", b, shape=(64, 64), same_mask_as=GOOD[1]),
        Kind("1-bit PNG", "onebit.png", "done", a, shape=(32, 64)),
        Kind("greyscale JPEG", "grey.jpg", "done", a, shape=(64, 48)),
        Kind("1x1 image", "pixel.png", "done", some, shape=(1, 1)),
        Kind("upper-case .PNG extension", "UPPER.PNG", "done", a, shape=(64, 64), same_mask_as=GOOD[0]),
        Kind("image in nested subfolders", "deep/er/still/nested.png", "done", a, shape=(64, 64),
             same_mask_as=GOOD[0]),
        Kind("file name with spaces and non-ASCII", "ça va été.png", "done", a, shape=(64, 64),
             same_mask_as=GOOD[0]),
        Kind("symlink to a good image", "link_to_good.png", "done", a, shape=(64, 64), same_mask_as=GOOD[0]),
        Kind("image inside a symlink loop (listed once)", "loop/inside.png", "done", a, shape=(64, 64),
             same_mask_as=GOOD[0]),
        Kind("hidden file .x.png", ".x.png", "ignored", a),
        # labels that cannot be class names: the "labels" stage, before anything is read
        Kind('empty label ""', "label_empty.png", "labels", [a[0], ""], ("empty",)),
        Kind("blank label (spaces)", "label_blank.png", "labels", ["   "], ("empty",)),
        Kind("label with a newline", "label_newline.png", "labels", ["red\ncircle"], ("U+000A",)),
        Kind("label with a NUL", "label_nul.png", "labels", ["red\x00circle"], ("U+0000",)),
        Kind("label with a tab", "label_tab.png", "labels", ["red\tcircle"], ("U+0009",)),
        Kind("label with U+2028 line separator", "label_u2028.png", "labels", ["red\u2028circle"], ("U+2028",)),
        Kind('label "background"', "label_background.png", "labels", [a[0], "background"], ("reserved",)),
        Kind('label "BACKGROUND"', "label_background_upper.png", "labels", ["BACKGROUND"], ("reserved",)),
        Kind("300-character label", "label_long.png", "labels", ["x" * 300], ("300 characters",)),
        # no labels: skipped
        Kind("empty label list", "label_list_empty.png", "skipped", []),
        Kind("image with no labels.json entry", "unlisted.png", "skipped", None),
        # a labels.json entry without a file: ignored
        Kind("labels.json entry for a missing file", "missing.png", "ignored", a),
    ]


def _write_corpus(images: Path, good: list, kinds: list[Kind]) -> None:
    """Write every kind's file below ``images`` (the good scenes are written by the caller)."""
    donor = good[N_GOOD].image  # an extra scene for the odd images
    grey = _grey(good[0].image)
    good_png = (images / GOOD[0]).read_bytes()
    jpeg = io.BytesIO()
    Image.fromarray(donor).save(jpeg, format="JPEG", quality=90)
    rgba = np.dstack([good[1].image, np.linspace(0, 255, 64 * 64).reshape(64, 64).astype(np.uint8)])
    exif = Image.Exif()
    exif[0x0112] = 6
    writers: dict[str, Callable[[Path], None]] = {
        "bomb.png": lambda p: p.write_bytes(_bomb_png(30000, 30000)),
        "bomb_12k.png": lambda p: p.write_bytes(_bomb_png(12000, 12000)),
        "truncated.png": lambda p: p.write_bytes(good_png[:len(good_png) // 2]),
        "truncated_jpeg.jpg": lambda p: p.write_bytes(jpeg.getvalue()[:len(jpeg.getvalue()) // 2]),
        "empty.png": lambda p: p.write_bytes(b""),
        "notes.jpg": lambda p: p.write_text("this is not an image\n"),
        "dangling.png": lambda p: os.symlink("no-such-file.png", p),
        "folder.png": lambda p: p.mkdir(),
        "strip.png": lambda p: write_image(p, np.tile(donor[:20], (1, 20000 // 64 + 1, 1))[:, :20000]),
        "grey16.png": lambda p: Image.fromarray(grey.astype(np.uint16) * 257).save(p),
        "grey8.png": lambda p: Image.fromarray(grey).save(p),
        "grey16be.tif": lambda p: Image.fromarray((grey.astype(np.uint16) * 257).astype(">u2")).save(p),
        "float32.tif": lambda p: Image.fromarray(grey.astype(np.float32) / 255).save(p),
        "la.png": lambda p: Image.merge("LA", (Image.fromarray(grey), Image.fromarray(rgba[:, :, 3]))).save(p),
        "exif6.jpg": lambda p: Image.fromarray(donor[:40]).save(p, exif=exif),  # stored 64 wide, 40 high
        "cmyk.jpg": lambda p: Image.fromarray(donor[:48]).convert("CMYK").save(p),
        "palette_trns.png": lambda p: Image.fromarray(donor[:, :56]).quantize(16).save(p, transparency=0),
        "rgba.png": lambda p: Image.fromarray(rgba).save(p),
        "onebit.png": lambda p: Image.fromarray(_grey(donor[:32])).convert("1").save(p),
        "grey.jpg": lambda p: Image.fromarray(_grey(donor[:, :48])).save(p),
        "pixel.png": lambda p: write_image(p, donor[:1, :1]),
        "link_to_good.png": lambda p: os.symlink(GOOD[0], p),
        "loop/inside.png": lambda p: (p.write_bytes(good_png), os.symlink("..", p.parent / "parent")),
    }
    for kind in kinds:
        path = images / kind.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind.expect == "ignored" and kind.path == "missing.png":
            continue
        writer = writers.get(kind.path)
        if writer is None:  # a copy of a good scene: label kinds, skipped ones, name and folder kinds
            path.write_bytes(good_png)
        else:
            writer(path)


def _labels_json(path: Path, good_labels: dict[str, list[str]], kinds: list[Kind]) -> None:
    entries = dict(good_labels)
    entries.update({kind.path: kind.labels for kind in kinds if kind.labels is not None})
    path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")


def _invoke(*args: str):
    return CliRunner().invoke(main, [*args], catch_exceptions=True)


@dataclass
class Runs:
    images: Path
    out: Path  # the mixed run
    good_out: Path  # the good images alone
    kinds: list[Kind]
    result: object
    good_result: object
    labels: dict[str, list[str]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    tmp = tmp_path_factory.mktemp("bad_inputs")
    good = _good_scenes()
    labels = {name: list(scene.labels) for name, scene in zip(GOOD, good)}
    kinds = _corpus(labels)
    images, good_images = tmp / "images", tmp / "good" / "images"
    for name, scene in zip(GOOD, good):
        write_image(images / name, scene.image)
        write_image(good_images / name, scene.image)
    _write_corpus(images, good, kinds)
    _labels_json(tmp / "labels.json", labels, kinds)
    result = _invoke("generate", str(images), "--labels", str(tmp / "labels.json"), "--out", str(tmp / "out"), *ARGS)
    good_result = _invoke("generate", str(good_images), "--labels", str(tmp / "labels.json"), "--out",
                          str(tmp / "good" / "out"), *ARGS)
    return Runs(images, tmp / "out", tmp / "good" / "out", kinds, result, good_result, labels)


def _errors(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "errors.jsonl").read_text(encoding="utf-8").splitlines()]


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def _kind_ids(expect: set[str]) -> list[Kind]:
    placeholder = {name: ["red circle"] for name in GOOD}
    return [kind for kind in _corpus(placeholder) if kind.expect in expect]


# ---------------------------------------------------------------------------------------------------- the tests

def test_corpus_has_at_least_25_kinds():
    assert len(_kind_ids({"read", "labels", "done", "skipped", "ignored"})) >= 25


def test_mixed_run_fails_some_items_without_a_traceback(runs):
    assert runs.result.exit_code == 1, runs.result.output
    assert isinstance(runs.result.exception, SystemExit)  # the command's own exit, not an escaped exception
    assert "Traceback" not in runs.result.output
    assert "failures in" in runs.result.output and "errors.jsonl" in runs.result.output
    assert runs.good_result.exit_code == 0, runs.good_result.output


def test_errors_jsonl_lists_exactly_the_failed_items(runs):
    errors = _errors(runs.out)
    assert all(set(entry) == {"path", "stage", "message"} for entry in errors)
    expected = {str(runs.images / k.path): k.expect for k in runs.kinds if k.expect in ("read", "labels")}
    assert {entry["path"]: entry["stage"] for entry in errors} == expected
    assert len(errors) == len(expected)  # each once
    summary = _manifest(runs.out)["summary"]
    assert summary["failed"] == len(expected)


@pytest.mark.parametrize("kind", _kind_ids({"read", "labels"}), ids=lambda k: k.kind)
def test_bad_item_is_reported_with_its_stage(runs, kind):
    by_path = {entry["path"]: entry for entry in _errors(runs.out)}
    entry = by_path[str(runs.images / kind.path)]
    assert entry["stage"] == kind.expect
    for text in kind.message:
        assert text.lower() in entry["message"].lower(), entry["message"]
    assert "Traceback" not in entry["message"]
    status = _manifest(runs.out)["images"][kind.path]
    assert status["status"] == "failed" and status["stage"] == kind.expect
    assert not (runs.out / Path(kind.path).with_suffix(".png")).exists()  # no mask


@pytest.mark.parametrize("kind", _kind_ids({"done"}), ids=lambda k: k.kind)
def test_odd_but_legal_image_gets_a_correct_mask(runs, kind):
    classes = read_classes(runs.out / "classes.txt")
    status = _manifest(runs.out)["images"][kind.path]
    assert status["status"] == "done", status
    mask_path = runs.out / Path(kind.path).with_suffix(".png")
    mask = read_mask(mask_path)
    assert mask.shape == kind.shape
    image_labels = json.loads((runs.images.parent / "labels.json").read_text(encoding="utf-8"))[kind.path]
    allowed = {0, 255} | {classes.index(name) for name in image_labels}
    assert set(np.unique(mask).tolist()) <= allowed
    scores = np.load(runs.out / "scores" / Path(kind.path).with_suffix(".npz"))
    assert scores["probabilities"].shape == (len(image_labels) + 1, *kind.shape)
    if kind.same_mask_as is not None:
        other = runs.out / Path(kind.same_mask_as).with_suffix(".png")
        assert mask_path.read_bytes() == other.read_bytes()


def test_sixteen_bit_grey_is_scaled_not_white(runs):
    grey8 = read_image(runs.images / "grey8.png")
    for name in ("grey16.png", "grey16be.tif", "float32.tif", "la.png"):
        image = read_image(runs.images / name)
        assert image.shape == (64, 64, 3) and image.max() < 255
        assert np.array_equal(image, grey8), name


def test_exif_orientation_is_applied(runs):
    path = runs.images / "exif6.jpg"
    with Image.open(path) as raw:
        assert raw.size == (64, 40) and raw.getexif()[0x0112] == 6
        stored = np.asarray(raw.convert("RGB"))
    assert np.array_equal(read_image(path), np.rot90(stored, -1))  # 6: turned 90 degrees clockwise for display


def test_images_without_labels_are_skipped(runs):
    manifest = _manifest(runs.out)
    skipped = [k.path for k in runs.kinds if k.expect == "skipped"]
    for name in skipped:
        assert manifest["images"][name]["status"] == "skipped"
        assert not (runs.out / Path(name).with_suffix(".png")).exists()
    assert manifest["summary"]["skipped"] == len(skipped)


def test_hidden_files_link_loops_and_missing_entries_are_ignored(runs):
    images = _manifest(runs.out)["images"]
    for kind in runs.kinds:
        if kind.expect == "ignored":
            assert kind.path not in images and not (runs.out / kind.path).is_file()
    assert not [name for name in images if "parent" in Path(name).parts]  # the loop is not followed
    assert sum(Path(name).name == "inside.png" for name in images) == 1
    listed = {k.path for k in runs.kinds if k.expect in ("read", "labels", "done", "skipped")} | set(GOOD)
    assert set(images) == listed
    done = [k for k in runs.kinds if k.expect == "done"]
    assert _manifest(runs.out)["summary"]["done"] == N_GOOD + len(done)


def test_good_images_outputs_are_byte_identical_to_a_run_without_the_bad_ones(runs):
    assert (runs.out / "classes.txt").read_bytes() == (runs.good_out / "classes.txt").read_bytes()
    for name in GOOD:
        assert (runs.out / name).read_bytes() == (runs.good_out / name).read_bytes(), name
        npz = Path("scores") / Path(name).with_suffix(".npz")
        assert (runs.out / npz).read_bytes() == (runs.good_out / npz).read_bytes(), name
    assert _errors(runs.good_out) == []


# PIL refuses images of more than 2 x Image.MAX_IMAGE_PIXELS (178,956,970) pixels in Image.open and warns above
# 89,478,485; read_image lifts that limit for its own (max_pixels, --max-pixels, default 100,000,000).
@pytest.mark.parametrize("max_pixels", [None, 300_000_000], ids=["no limit", "300 MP limit"])
def test_a_raised_max_pixels_is_honoured(tmp_path, max_pixels):
    """An L-mode header of 14000x14000 (196 MP) is under the limit asked for: it must be decoded (and then fail as
    truncated: the file holds one pixel), not refused for its size. Decoding it allocates 196 MB."""
    path = tmp_path / "big.png"
    path.write_bytes(_bomb_png(14000, 14000, mode="L"))
    with pytest.raises(ImageReadError) as error:
        read_image(path, max_pixels=max_pixels)
    assert "truncated" in str(error.value) and "exceeds limit" not in str(error.value)


def test_a_bomb_reports_freelabels_own_limit(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png(30000, 30000))
    with pytest.raises(ImageReadError) as error:
        read_image(path)
    assert "more than the limit of 100,000,000 (--max-pixels)" in str(error.value)


def test_an_image_under_the_limit_reads_without_a_bomb_warning(tmp_path):
    import warnings

    path = tmp_path / "large.png"
    path.write_bytes(_bomb_png(10000, 9500, mode="L"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageReadError) as error:  # one pixel of data: truncated, after the size check
            read_image(path)
    assert "truncated" in str(error.value)


# ------------------------------------------------------------------------------------------- usage errors: exit 2

def _usage_error(tmp_path: Path, labels_file: Path):
    out = tmp_path / "out"
    result = _invoke("generate", str(tmp_path / "images"), "--labels", str(labels_file), "--out", str(out), *ARGS)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert not out.exists()  # nothing written
    return lines[0]


def _one_image_folder(tmp_path: Path, *names: str) -> None:
    image = next(scenes(SEED, 1)).image
    for name in names:
        write_image(tmp_path / "images" / name, image)


def test_two_images_that_would_write_one_mask(tmp_path):
    _one_image_folder(tmp_path, "photo.jpg", "photo.png")
    (tmp_path / "labels.json").write_text(json.dumps({"photo.jpg": ["red circle"], "photo.png": ["red circle"]}))
    line = _usage_error(tmp_path, tmp_path / "labels.json")
    assert "photo.jpg" in line and "photo.png" in line and "same mask" in line


def test_csv_with_an_unclosed_quote(tmp_path):
    _one_image_folder(tmp_path, "a.png", "b.png")
    (tmp_path / "labels.csv").write_text('image,labels\na.png,"red circle|blue square\nb.png,red circle\n')
    line = _usage_error(tmp_path, tmp_path / "labels.csv")
    assert "labels.csv:2" in line and "quote" in line


def test_csv_with_an_extra_column(tmp_path):
    _one_image_folder(tmp_path, "a.png", "b.png")
    (tmp_path / "labels.csv").write_text("image,labels\na.png,red circle\nb.png,red circle,blue square\n")
    line = _usage_error(tmp_path, tmp_path / "labels.csv")
    assert "labels.csv:3" in line and "found 3" in line


def test_csv_with_an_excel_byte_order_mark_works(tmp_path):
    _one_image_folder(tmp_path, "a.png")
    (tmp_path / "labels.csv").write_bytes("image,labels\r\na.png,red circle|blue square\r\n".encode("utf-8-sig"))
    out = tmp_path / "out"
    result = _invoke("generate", str(tmp_path / "images"), "--labels", str(tmp_path / "labels.csv"), "--out",
                     str(out), *ARGS)
    assert result.exit_code == 0, result.output
    assert read_classes(out / "classes.txt") == ["background", "red circle", "blue square"]
    assert read_mask(out / "a.png").shape == (64, 64)


# ----------------------------------------------------------------------------------------------- peak memory

def test_peak_rss_with_a_bomb_and_a_long_strip_stays_bounded(tmp_path):
    """A subprocess run over the bomb, the 20000x20 strip and a good scene: its own peak RSS (os.wait4) and
    RUSAGE_CHILDREN (all children of this process so far, an upper bound) stay under 2.5 GB."""
    import resource

    good = _good_scenes()
    images = tmp_path / "images"
    write_image(images / GOOD[0], good[0].image)
    (images / "bomb.png").write_bytes(_bomb_png(30000, 30000))
    write_image(images / "strip.png", np.tile(good[N_GOOD].image[:20], (1, 20000 // 64 + 1, 1))[:, :20000])
    labels = {GOOD[0]: list(good[0].labels), "bomb.png": ["red circle"], "strip.png": ["red circle"]}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    out = tmp_path / "out"
    log = tmp_path / "log.txt"
    with log.open("wb") as handle:
        process = subprocess.Popen([str(FREELABEL), "generate", str(images), "--labels", str(tmp_path / "labels.json"),
                                    "--out", str(out), *ARGS], stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    output = log.read_text(errors="replace")
    assert process.returncode == 1, output
    assert "Traceback" not in output
    peak = usage.ru_maxrss * 1024  # Linux: kilobytes
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"peak RSS of the subprocess: {peak / 1e6:.0f} MB (RUSAGE_CHILDREN {children / 1e6:.0f} MB)",
          file=sys.stderr)
    assert peak < PEAK_RSS_LIMIT and children < PEAK_RSS_LIMIT
    assert [entry["path"] for entry in _errors(out)] == [str(images / "bomb.png")]
    assert read_mask(out / "strip.png").shape == (20, 20000)
