"""A probe corpus for the newer commands (train, predict, video, query, classify, tune), built by the tests like
``tests/test_bad_inputs.py``: each kind of bad input, as a hostile but realistic user gives it, must end with its
exit code and message, the files it promises (and none it must not write), and no traceback. Then the rules every
output folder keeps: one writer at a time (two processes on one folder), a folder deleted during a run, and a full
disk (a small tmpfs where the machine lets the test mount one; simulated otherwise).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import FAST_TRAINING, write_toy_pseudo_folder
from freelabel.errors import RunStoppedError
from freelabel.io import read_classes, read_mask, write_classes, write_image, write_mask
from freelabel.io.files import read_jsonl
from freelabel.pipelines.cli import main
from freelabel.run.folder import LOCK
from freelabel.run.masks import FolderOptions, MaskFolder, label_inputs
from freelabel.segmentation import Segmentation

TINY = ["--model", "test-tiny-vit", "--pretrained", "random"]
FREELABEL = str(Path(sys.executable).parent / "freelabel")


# ------------------------------------------------------------------------------------------------ shared inputs

def _texture(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Toy images with labels, their pseudo-masks (tiny CLIP), a one-epoch training run on them (run/) and one of
    two epochs stopped after its first step (partial/), and a clip of 12 frames with key masks for frames 0, 5
    and 10."""
    root = tmp_path_factory.mktemp("probes")
    write_toy_pseudo_folder(root, 11, 12)
    trained = CliRunner().invoke(main, ["train", str(root / "pseudo"), "--out", str(root / "run"), *FAST_TRAINING,
                                        "--epochs", "1"])
    assert trained.exit_code == 0, trained.output
    # a run stopped after its first step (as a kill leaves it), to resume with --epochs 2
    stopped = CliRunner().invoke(main, ["train", str(root / "pseudo"), "--out", str(root / "partial"), *FAST_TRAINING,
                                        "--epochs", "2", "--max-minutes", "1e-9"])
    assert stopped.exit_code == 0, stopped.output
    background = _texture(48, 64, 0)
    for t in range(12):
        frame, mask = background.copy(), np.zeros((48, 64), np.uint8)
        frame[10:26, 8 + 2 * t:24 + 2 * t] = 255
        mask[10:26, 8 + 2 * t:24 + 2 * t] = 1
        write_image(root / "frames" / f"{t:05d}.png", frame)
        if t % 5 == 0:
            write_mask(root / "keys" / f"{t:05d}.png", mask)
    write_classes(root / "keys" / "classes.txt", ["background", "square"])
    return root


@dataclass
class Setup:
    """A probe's own copy of what it needs, under ``tmp``."""

    world: Path
    tmp: Path

    def copy(self, name: str) -> Path:
        """A copy of the shared ``name`` (images, pseudo, run, partial, frames, keys) to change."""
        shutil.copytree(self.world / name, self.tmp / name)
        return self.tmp / name


def _invoke(args: list[str]):
    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_clean(result, code: int, *messages: str) -> None:
    """Exit ``code``, every message in the output, and no traceback (an exception other than the exit)."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for message in messages:
        assert message in result.output, result.output


def _edit_tensors(path: Path, change: Callable[[dict[str, torch.Tensor]], None],
                  metadata: Callable[[dict[str, str]], None] | None = None) -> None:
    """Rewrite the safetensors file ``path`` with ``change`` applied to its tensors (and ``metadata`` to its
    metadata)."""
    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata() or {})
    tensors = load_file(str(path))
    change(tensors)
    if metadata:
        metadata(meta)
    save_file(tensors, str(path), metadata=meta or None)


def _first_float(tensors: dict[str, torch.Tensor], prefix: str = "") -> str:
    return next(k for k, t in tensors.items() if k.startswith(prefix) and t.is_floating_point() and t.numel() > 1)


def _nan(tensors):
    tensors[_first_float(tensors)][0] = float("nan")


def _reshape(tensors):
    name = _first_float(tensors, "model.") if any(k.startswith("model.") for k in tensors) else _first_float(tensors)
    tensors[name] = torch.zeros(*tensors[name].shape[:-1], tensors[name].shape[-1] + 1)


def _to_int(tensors):
    name = _first_float(tensors)
    tensors[name] = tensors[name].long()


# ---------------------------------------------------------------------------------------------------- train

def _train(setup: Setup, pseudo: Path, out: Path, *extra: str):
    return _invoke(["train", pseudo, "--out", out, *FAST_TRAINING, "--epochs", "1", *extra])


def _pseudo_with(setup: Setup, edit: Callable[[Path], None]) -> Path:
    pseudo = setup.copy("pseudo")
    edit(pseudo)
    return pseudo


def _masks_beyond_classes(pseudo: Path, names: list[str]) -> None:
    for name in names:
        mask = read_mask(pseudo / name)
        mask[:4, :4] = 40
        write_mask(pseudo / name, mask)


def _masks_of_another_size(pseudo: Path, names: list[str]) -> None:
    for name in names:
        write_mask(pseudo / name, np.zeros((20, 30), np.uint8))


def _all_masks(pseudo: Path) -> list[str]:
    return sorted(p.name for p in pseudo.glob("*.png"))


def _state_with(edit, metadata=None):
    def setup_run(setup: Setup) -> tuple[Path, Path]:
        run = setup.copy("partial")
        _edit_tensors(run / "state.safetensors", edit, metadata)
        return setup.world / "pseudo", run
    return setup_run


def _fresh_folder_with_state(setup: Setup) -> tuple[Path, Path]:
    out = setup.tmp / "fresh"
    out.mkdir()
    shutil.copy(setup.world / "partial" / "state.safetensors", out)
    return setup.world / "pseudo", out


def _metadata_without(key: str):
    def edit(meta: dict[str, str]) -> None:
        position = json.loads(meta["position"])
        del position[key]
        meta["position"] = json.dumps(position)
    return edit


TRAIN_KINDS = {
    # kind: (make (pseudo, out), extra args, exit code, message, check of the out folder)
    "manifest that is []": (lambda s: (_pseudo_with(s, lambda p: (p / "manifest.json").write_text("[]")),
                                       s.tmp / "out"), [], 2, "not a freelabel generate manifest"),
    "manifest whose entries are strings": (
        lambda s: (_pseudo_with(s, lambda p: (p / "manifest.json").write_text(json.dumps(
            {"images_dir": str(s.world / "images"), "images": {"000.png": "done"}}))), s.tmp / "out"),
        [], 2, "not a freelabel generate manifest"),
    "manifest whose images are a list": (
        lambda s: (_pseudo_with(s, lambda p: (p / "manifest.json").write_text(json.dumps(
            {"images_dir": str(s.world / "images"), "images": ["000.png"]}))), s.tmp / "out"),
        [], 2, "not a freelabel generate manifest"),
    "fresh folder holding another run's state": (_fresh_folder_with_state, [], 2, "no run.json"),
    "resume from a state with NaN": (_state_with(_nan), ["--epochs", "2"], 2, "non-finite"),
    "resume from a state of another architecture": (_state_with(_reshape), ["--epochs", "2"], 2, "does not fit"),
    "resume from a state of integer weights": (_state_with(_to_int), ["--epochs", "2"], 2, "dtype"),
    "state whose position lacks epoch": (_state_with(lambda t: None, _metadata_without("epoch")),
                                         ["--epochs", "2"], 2, "lacks epoch"),
    "state without a position": (_state_with(lambda t: None, lambda meta: meta.pop("position")),
                                 ["--epochs", "2"], 2, "not a freelabel training state"),
    "every mask beyond classes.txt": (
        lambda s: (_pseudo_with(s, lambda p: _masks_beyond_classes(p, _all_masks(p))), s.tmp / "out"),
        ["--val-fraction", "0"], 1, "every training item"),
    "every mask of another size": (
        lambda s: (_pseudo_with(s, lambda p: _masks_of_another_size(p, _all_masks(p))), s.tmp / "out"),
        ["--val-fraction", "0"], 1, "every training item"),
    "not a generate folder": (lambda s: (s.tmp, s.tmp / "out"), [], 2, "not a freelabel generate output"),
}


@pytest.mark.parametrize("kind", TRAIN_KINDS)
def test_train_probe(world, tmp_path, kind):
    make, extra, code, message = TRAIN_KINDS[kind]
    pseudo, out = make(Setup(world, tmp_path))
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    result = _train(Setup(world, tmp_path), pseudo, out, *extra)
    _assert_clean(result, code, message)
    if code == 2 and before is not None and "state" in kind:  # a refused state is left as it was, nothing added
        assert not (out / "model.safetensors").exists() or "model.safetensors" in before
    if "every mask" in kind:  # no untrained model stands for a run; each item is its line
        assert not (out / "model.safetensors").exists()
        errors = read_jsonl(out / "errors.jsonl")
        assert errors and all(("does not name" in e["message"]) or ("but its image" in e["message"])
                              for e in errors)


def test_train_one_mask_beyond_classes_costs_one_line(world, tmp_path):
    setup = Setup(world, tmp_path)
    pseudo = _pseudo_with(setup, lambda p: _masks_beyond_classes(p, ["003.png"]))
    result = _train(setup, pseudo, tmp_path / "out", "--val-fraction", "0")
    _assert_clean(result, 0)
    errors = read_jsonl(tmp_path / "out" / "errors.jsonl")
    assert len(errors) == 1 and errors[0]["path"].endswith("003.png") and "does not name" in errors[0]["message"]


def test_train_that_goes_non_finite_stops_and_keeps_the_last_finite_state(world, tmp_path, monkeypatch):
    from freelabel.segmenter import trainer as trainer_module

    run = tmp_path / "run"
    shutil.copytree(world / "partial", run)
    real_loss = trainer_module.segmenter_loss

    def diverging(*args, **kwargs):
        loss, parts = real_loss(*args, **kwargs)
        return loss * float("nan"), parts

    monkeypatch.setattr(trainer_module, "segmenter_loss", diverging)
    before = (run / "state.safetensors").read_bytes()
    result = _train(Setup(world, tmp_path), world / "pseudo", run, "--epochs", "2")
    _assert_clean(result, 1, "non-finite")
    assert (run / "state.safetensors").read_bytes() == before  # the last finite state stays
    assert all(torch.isfinite(t).all() for t in load_file(str(run / "state.safetensors")).values()
               if t.is_floating_point())


def test_a_killed_state_save_leaves_no_temp_file_and_no_duplicate_metrics_line(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world / "partial", run)
    # as a kill leaves it: the epoch's metrics line written, its state's save cut short
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "step": 10 ** 6}) + "\n")
    (run / ".state.safetensors.x1y2.tmp.safetensors").write_bytes(b"half a state")
    result = _train(Setup(world, tmp_path), world / "pseudo", run, "--epochs", "2")
    _assert_clean(result, 0)
    assert [m["epoch"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2]
    assert not list(run.glob(".*.tmp*"))


# -------------------------------------------------------------------------------------------------- predict

def _run_with_model(edit):
    def make(setup: Setup) -> Path:
        run = setup.copy("run")
        edit(run / "model.safetensors")
        return run
    return make


PREDICT_KINDS = {
    # kind: (make run folder, args after RUN IMAGES, exit code, message)
    "--labels ''": (lambda s: s.world / "run", ["--labels", ""], 2, "Error"),
    "a folder that is no run": (lambda s: s.tmp, [], 2, "not a freelabel training run"),
    "model weights with NaN": (_run_with_model(lambda p: _edit_tensors(p, _nan)), [], 2, "non-finite"),
    "model weights of another architecture": (_run_with_model(lambda p: _edit_tensors(p, _reshape)), [], 2,
                                              "does not fit"),
    "model weights of integers": (_run_with_model(lambda p: _edit_tensors(p, _to_int)), [], 2, "dtype"),
    "truncated model weights": (_run_with_model(lambda p: p.write_bytes(p.read_bytes()[:100])), [], 2,
                                "cannot read"),
    "--out is the image folder": (lambda s: s.world / "run", ["--out", "{images}"], 2, "inside the image folder"),
    "--out holds the image folder": (lambda s: s.world / "run", ["--out", "{world}"], 2, "holds the image folder"),
}


@pytest.mark.parametrize("kind", PREDICT_KINDS)
def test_predict_probe(world, tmp_path, kind):
    make, args, code, message = PREDICT_KINDS[kind]
    run = make(Setup(world, tmp_path))
    args = [a.format(images=world / "images", world=world) for a in args]
    out = [] if "--out" in args else ["--out", tmp_path / "out"]
    result = _invoke(["predict", run, world / "images", *out, *args])
    _assert_clean(result, code, message)
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked
    assert not (world / "images" / "job.json").exists() and not (world / "job.json").exists()


def test_predict_rerun_with_another_model_is_refused(world, tmp_path):
    assert _invoke(["predict", world / "run", world / "images", "--out", tmp_path / "out"]).exit_code == 0
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    _edit_tensors(run / "model.safetensors", lambda t: t.__setitem__(_first_float(t), t[_first_float(t)] * 2))
    _assert_clean(_invoke(["predict", run, world / "images", "--out", tmp_path / "out"]), 2, "another job")


def test_predict_a_corrupt_image_costs_its_line(world, tmp_path):
    images = Setup(world, tmp_path).copy("images")
    (images / "002.png").write_bytes(b"not a png")
    _assert_clean(_invoke(["predict", world / "run", images, "--out", tmp_path / "out"]), 1)
    errors = read_jsonl(tmp_path / "out" / "errors.jsonl")
    assert [Path(e["path"]).name for e in errors] == ["002.png"] and errors[0]["stage"] == "read"


def test_a_folder_another_run_holds_is_refused(world, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    handle = os.open(out / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        result = _invoke(["predict", world / "run", world / "images", "--out", out])
    finally:
        os.close(handle)
    _assert_clean(result, 2, "another freelabel run is writing")
    assert not (out / "job.json").exists() and not list(out.glob("*.png"))


# ---------------------------------------------------------------------------------------------------- video

def _keys_with(edit):
    def make(setup: Setup) -> tuple[Path, Path]:
        keys = setup.copy("keys")
        edit(keys)
        return setup.world / "frames", keys
    return make


def _odd_first_frame(setup: Setup) -> tuple[Path, Path]:
    frames = setup.copy("frames")
    write_image(frames / "00000.png", _texture(40, 40, 3))
    return frames, setup.world / "keys"


def _not_a_video(setup: Setup) -> tuple[Path, Path]:
    (setup.tmp / "clip.mp4").write_text("not a video")
    return setup.tmp / "clip.mp4", setup.world / "keys"


def _key_beyond_classes(keys: Path) -> None:
    mask = read_mask(keys / "00005.png")
    mask[:3, :3] = 7
    write_mask(keys / "00005.png", mask)


VIDEO_KINDS = {
    # kind: (make (frames, keys), args, exit code, message, failed frames)
    "--out is the frames folder": (lambda s: (s.world / "frames", s.world / "keys"), ["--out", "{frames}"], 2,
                                   "inside the frames", None),
    "--out is the key mask folder": (lambda s: (s.world / "frames", s.world / "keys"), ["--out", "{keys}"], 2,
                                     "inside the key mask folder", None),
    "--out holds the frames": (lambda s: (s.world / "frames", s.world / "keys"), ["--out", "{world}"], 2,
                               "holds the frames", None),
    "a key mask beyond classes.txt": (_keys_with(_key_beyond_classes), [], 1, "failed", ["00005.png"]),
    "a key mask of another size": (_keys_with(lambda k: write_mask(k / "00005.png", np.zeros((8, 8), np.uint8))),
                                   [], 1, "failed", ["00005.png"]),
    "only the first frame of another size": (_odd_first_frame, [], 1, "failed", ["00000.png"]),
    "a file that is no video": (_not_a_video, [], 2, "cannot open the video", None),
    "key masks without classes.txt": (_keys_with(lambda k: (k / "classes.txt").unlink()), [], 2, "classes.txt",
                                      None),
}


@pytest.mark.parametrize("kind", VIDEO_KINDS)
def test_video_probe(world, tmp_path, kind):
    make, args, code, message, failed = VIDEO_KINDS[kind]
    frames, keys = make(Setup(world, tmp_path))
    args = [a.format(frames=frames, keys=keys, world=world) for a in args]
    out = [] if "--out" in args else ["--out", tmp_path / "out"]
    before = {p: p.read_bytes() for p in [*frames.rglob("*.png"), *keys.rglob("*")] if p.is_file()} \
        if frames.is_dir() else {}
    result = _invoke(["video", frames, "--key-masks", keys, *out, *args])
    _assert_clean(result, code, message)
    assert {p: p.read_bytes() for p in before} == before  # no input overwritten
    if code == 2:
        assert not (tmp_path / "out").exists() and not (frames.parent / "job.json").exists()
        return
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    errors = read_jsonl(tmp_path / "out" / "errors.jsonl")
    assert sorted(Path(e["path"]).name for e in errors) == failed
    summary, frames_count = manifest["summary"], len(list(frames.glob("*.png")))
    assert summary["failed"] == len(failed) and summary["done"] + summary["failed"] == frames_count
    assert len(list((tmp_path / "out").glob("*.png"))) == frames_count - len(failed)


def test_video_labels_mode_resumes_and_a_key_masks_rerun_with_other_settings_is_refused(world, tmp_path):
    labels = ["video", world / "frames", "--labels", "red square", "--key-interval", "4", "--out", tmp_path / "l",
              *TINY, "--no-crf"]
    _assert_clean(_invoke(labels), 0)
    _assert_clean(_invoke(labels), 0, "12 skipped")
    keys = ["video", world / "frames", "--key-masks", world / "keys", "--out", tmp_path / "k"]
    _assert_clean(_invoke(keys), 0)
    _assert_clean(_invoke([*keys, "--refine"]), 2, "another job")


@pytest.mark.parametrize("kind, run", [
    ("a --checkpoint folder that is no run", lambda s: s.tmp),
    ("a --checkpoint whose weights hold NaN", _run_with_model(lambda p: _edit_tensors(p, _nan))),
])
def test_video_checkpoint_probe(world, tmp_path, kind, run):
    result = _invoke(["video", world / "frames", "--labels", "red square", "--checkpoint",
                      run(Setup(world, tmp_path)), "--out", tmp_path / "out"])
    _assert_clean(result, 2)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------- query

def test_query_answers_more_texts_than_the_overlay_has_colours(world, tmp_path):
    texts = [f"thing {i}" for i in range(300)]
    result = _invoke(["query", world / "images" / "000.png", *texts, "--out", tmp_path / "out", *TINY, "--no-crf"])
    _assert_clean(result, 0)
    lines = read_jsonl(tmp_path / "out" / "queries.jsonl")
    assert len(lines) == 300 and all((tmp_path / "out" / line["mask"]).is_file() for line in lines)
    assert (tmp_path / "out" / "overlay.png").is_file()
    assert all("overlay" not in line for line in lines[:254]) and all("not drawn" in line["overlay"]
                                                                       for line in lines[254:])


QUERY_KINDS = {
    "an image that is not one": (lambda s: (s.tmp / "x.png").write_bytes(b"nope") or s.tmp / "x.png", ["cat"], 2),
    "no texts": (lambda s: s.world / "images" / "000.png", [], 2),
    "an empty text among others": (lambda s: s.world / "images" / "000.png", ["red circle", " "], 1),
    "a --checkpoint whose weights hold NaN": (lambda s: s.world / "images" / "000.png", ["cat", "--checkpoint",
                                                                                          "{nan_run}"], 2),
}


@pytest.mark.parametrize("kind", QUERY_KINDS)
def test_query_probe(world, tmp_path, kind):
    make, args, code = QUERY_KINDS[kind]
    setup = Setup(world, tmp_path)
    if "{nan_run}" in args:
        args = [str(_run_with_model(lambda p: _edit_tensors(p, _nan))(setup)) if a == "{nan_run}" else a
                for a in args]
    result = _invoke(["query", make(setup), *args, "--out", tmp_path / "out", *TINY, "--no-crf"])
    _assert_clean(result, code)
    if code == 2:
        assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------- classify

def test_classify_one_class_vocabulary_warns_and_scores_below_one(world, tmp_path):
    result = _invoke(["classify", world / "images", "--vocab", "red circle", "--out", tmp_path / "out", *TINY])
    _assert_clean(result, 0)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    scores = [score for entry in manifest["images"].values() for score in entry["scores"].values()]
    assert scores and max(scores) < 1.0


def test_a_one_class_vocabulary_warns(world):
    from freelabel.clip.loading import load_clip
    from freelabel.pseudo.labeler import Labeler
    from freelabel.pseudo.select import LabelSelector

    selector = LabelSelector(Labeler(load_clip("test-tiny-vit", "random", text_cache="off")))
    with pytest.warns(UserWarning, match="one class"):
        selector.set_vocabulary(["red circle"])
    probabilities = selector.classify_views([np.zeros((32, 32, 3), np.uint8)])
    assert probabilities.shape == (1, 1) and probabilities[0, 0] < 1.0


CLASSIFY_KINDS = {
    "an empty vocabulary": (["--vocab", ""], None, 2),
    "--out is the image folder": (["--vocab", "cat,dog"], "{images}", 2),
    "--out holds the image folder": (["--vocab", "cat,dog"], "{world}", 2),
}


@pytest.mark.parametrize("kind", CLASSIFY_KINDS)
def test_classify_probe(world, tmp_path, kind):
    args, out, code = CLASSIFY_KINDS[kind]
    out = (out or str(tmp_path / "out")).format(images=world / "images", world=world)
    result = _invoke(["classify", world / "images", *args, "--out", out, *TINY])
    _assert_clean(result, code)
    assert not (tmp_path / "out").exists() and not (world / "images" / "job.json").exists()


def test_classify_rerun_with_another_vocabulary_is_refused(world, tmp_path):
    args = ["classify", world / "images", "--out", tmp_path / "out", *TINY]
    _assert_clean(_invoke([*args, "--vocab", "red circle,cat"]), 0)
    _assert_clean(_invoke([*args, "--vocab", "red circle,dog"]), 2, "another job")


# ----------------------------------------------------------------------------------------------------- tune

def _tune_masks(setup: Setup, edit: Callable[[Path], None]) -> Path:
    masks = setup.copy("pseudo")
    edit(masks)
    return masks


TUNE_KINDS = {
    "one mask of another size": (lambda p: _masks_of_another_size(p, ["004.png"]), "004.png"),
    "one mask beyond the classes": (lambda p: _masks_beyond_classes(p, ["004.png"]), "004.png"),
    "one mask that is no image": (lambda p: (p / "004.png").write_bytes(b"nope"), "004.png"),
    "classes without background": (lambda p: write_classes(p / "classes.txt", ["sky", "ground"]), "background"),
}


@pytest.mark.parametrize("kind", TUNE_KINDS)
def test_tune_probe(world, tmp_path, kind):
    edit, message = TUNE_KINDS[kind]
    masks = _tune_masks(Setup(world, tmp_path), edit)
    result = _invoke(["tune", world / "images", "--masks", masks, "--classes", masks / "classes.txt", "--out",
                      tmp_path / "preset.json", *TINY])
    _assert_clean(result, 2, message)
    assert not (tmp_path / "preset.json").exists()


def test_the_corpus_has_at_least_40_kinds():
    kinds = {"train": len(TRAIN_KINDS) + 4, "predict": len(PREDICT_KINDS) + 3, "video": len(VIDEO_KINDS) + 3,
             "query": len(QUERY_KINDS) + 1, "classify": len(CLASSIFY_KINDS) + 3, "tune": len(TUNE_KINDS)}
    assert sum(kinds.values()) >= 40, kinds


# ------------------------------------------------------------------------- the folder rule, under stress

class _Painter:
    """A stand-in model: every pixel is the first label; ``on_image`` runs before each image (a hostile act)."""

    def __init__(self, on_image: Callable[[int], None] = lambda index: None):
        self.on_image, self.count = on_image, 0

    def prepare_labels(self, labels):
        pass

    def set_image(self, image):
        self.on_image(self.count)
        self.count += 1
        self.shape = image.shape[:2]

    def segment(self, labels):
        probabilities = np.zeros((len(labels) + 1, *self.shape), np.float32)
        probabilities[1] = 1
        return Segmentation(list(labels), probabilities[1:], probabilities, np.ones(self.shape, np.uint8))


def _mask_folder(world: Path, out: Path) -> MaskFolder:
    inputs = label_inputs(world / "images", json.loads((world / "labels.json").read_text()), "labels.json")
    return MaskFolder(world / "images", inputs, out, {"model": "painter"}, FolderOptions())


def test_an_output_folder_deleted_during_a_run_stops_it(world, tmp_path):
    out = tmp_path / "out"

    def delete_at_the_fourth(index: int) -> None:
        if index == 3:
            shutil.rmtree(out)

    with pytest.raises(RunStoppedError, match="deleted or replaced"):
        _mask_folder(world, out).run(lambda: _Painter(delete_at_the_fourth), {})
    assert not (out / "manifest.json").exists()  # no manifest claims masks that are not there


def test_a_full_disk_while_writing_masks_fails_the_items_and_the_records_stop_the_run(world, tmp_path,
                                                                                        monkeypatch):
    import freelabel.run.job as job_module

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(job_module, "write_mask", no_space)
    manifest = _mask_folder(world, tmp_path / "out").run(lambda: _Painter(), {})
    assert manifest["summary"]["failed"] == 12 and manifest["summary"]["done"] == 0
    errors = read_jsonl(tmp_path / "out" / "errors.jsonl")
    assert len(errors) == 12 and all(e["stage"] == "write" and "No space" in e["message"] for e in errors)
    import freelabel.run.folder as folder_module

    monkeypatch.setattr(folder_module, "append_jsonl", no_space)
    with pytest.raises(RunStoppedError, match="No space"):
        _mask_folder(world, tmp_path / "again").run(lambda: _Painter(), {})


def test_a_state_that_cannot_be_saved_is_one_line_and_exit_1(world, tmp_path, monkeypatch):
    import freelabel.segmenter.checkpoint as checkpoint_module

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", no_space)
    result = _train(Setup(world, tmp_path), world / "pseudo", tmp_path / "run")
    _assert_clean(result, 1, "cannot save the run's state", "No space")
    assert not list((tmp_path / "run").glob(".*.tmp*"))


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs at tmp_path/disk (skipped where the machine does not let the test mount one)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'}); the full-disk "
                    "behaviour is covered by the simulated tests above")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until at most ``leave`` bytes are free."""
    free = shutil.disk_usage(disk).free
    if free > leave:
        (disk / "filler").write_bytes(b"\0" * (free - leave))


@pytest.mark.slow
def test_a_real_full_disk(world, small_tmpfs):
    _fill(small_tmpfs, 0)
    result = subprocess.run([FREELABEL, "predict", str(world / "run"), str(world / "images"), "--out",
                             str(small_tmpfs / "out")], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("WARNING")]
    assert len(errors) == 1 and errors[0].startswith("Error:") and "No space left" in errors[0]
    (small_tmpfs / "filler").unlink()
    _fill(small_tmpfs, 5 * 4096)  # room for the job files, not for every mask
    result = subprocess.run([FREELABEL, "predict", str(world / "run"), str(world / "images"), "--out",
                             str(small_tmpfs / "out")], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    train = subprocess.run([FREELABEL, "train", str(world / "pseudo"), "--out", str(small_tmpfs / "run"),
                            *FAST_TRAINING, "--epochs", "1"], capture_output=True, text=True)
    assert train.returncode == 1 and "Traceback" not in train.stderr, train.stderr
    assert "No space left" in train.stderr


@pytest.mark.slow
def test_two_processes_on_one_folder_never_mix(world, tmp_path):
    """Two `generate` runs with different labels started together on one --out: one finishes, the other is refused
    in one line (it found the folder locked, or bound to the other's labels); the folder holds one job's files."""
    other = {name: ["blue square"] for name in json.loads((world / "labels.json").read_text())}
    (tmp_path / "other.json").write_text(json.dumps(other))
    out = tmp_path / "out"
    commands = [[FREELABEL, "generate", str(world / "images"), "--labels", str(labels), "--out", str(out),
                 "--no-crf", *TINY] for labels in (world / "labels.json", tmp_path / "other.json")]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for command in commands]
    results = [(process.wait(timeout=600), process.stderr.read()) for process in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "Traceback" not in refused and ("another freelabel run is writing" in refused or "another job" in refused)
    winner = commands[[code for code, _ in results].index(0)]
    classes = read_classes(out / "classes.txt")
    manifest = json.loads((out / "manifest.json").read_text())
    job = json.loads((out / "job.json").read_text())
    assert job["classes"] == classes == manifest["classes"]
    assert ("blue square" in classes) == (winner is commands[1])
    assert all(set(np.unique(read_mask(out / Path(name).with_suffix(".png")))) <= {*range(len(classes)), 255}
               for name in manifest["images"])
    assert not (out / LOCK).exists()


def test_a_run_folder_another_training_holds_is_refused(world, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    handle = os.open(out / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        result = _train(Setup(world, tmp_path), world / "pseudo", out)
    finally:
        os.close(handle)
    _assert_clean(result, 2, "another freelabel run is writing")
    assert not (out / "run.json").exists()


def test_generate_whose_output_folder_is_deleted_mid_run_exits_1_in_one_line(world, tmp_path, monkeypatch):
    from freelabel.pseudo.labeler import Labeler

    out, seen = tmp_path / "out", []
    set_image = Labeler.set_image

    def deleting(self, image):
        seen.append(1)
        if len(seen) == 4:
            shutil.rmtree(out)
        return set_image(self, image)

    monkeypatch.setattr(Labeler, "set_image", deleting)
    result = _invoke(["generate", world / "images", "--labels", world / "labels.json", "--out", out, "--no-crf",
                      *TINY])
    _assert_clean(result, 1, "deleted or replaced")
    assert not (out / "manifest.json").exists()
