"""Shared fixtures: tiny open_clip models registered for tests (no downloads), and the shared real datasets."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import open_clip
import torch
import pytest

TEST_MODEL_CONFIGS = Path(__file__).parent / "model_configs"
# registered here and, through the environment, in every worker process freelabel starts (freelabel.clip.loading)
os.environ["FREELABEL_MODEL_CONFIGS"] = str(TEST_MODEL_CONFIGS)
open_clip.add_model_config(TEST_MODEL_CONFIGS)
# label embeddings are cached on disk by default: tests keep theirs out of the user's home
os.environ["FREELABEL_TEXT_CACHE"] = tempfile.mkdtemp(prefix="freelabel-test-text-cache-")
atexit.register(shutil.rmtree, os.environ["FREELABEL_TEXT_CACHE"], ignore_errors=True)
TEST_MODELS = sorted(p.stem for p in TEST_MODEL_CONFIGS.glob("*.json"))
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
# `freelabel train` flags that keep a run on the tiny models to seconds
FAST_TRAINING = ["--architecture", "rankseg-small", "--batch-size", "4", "--workers", "0", "--input-size", "32"]


@pytest.fixture
def shared_datasets() -> Path:
    """``../shared/datasets`` beside the checkout. Absent: skipped with a message, but a failure under CI."""
    if not SHARED_DATASETS.is_dir():
        message = f"real datasets not found at {SHARED_DATASETS} (they live beside the checkout, never in it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI must have them")
        pytest.skip(message)
    return SHARED_DATASETS


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                            reason="no CUDA device"))]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each torch device a GPU path exists for: cpu always, cuda when one is present."""
    return request.param


def write_toy_pseudo_folder(root: Path, seed: int, n: int) -> None:
    """``root/images`` (scenes 0..n-1 of toy stream ``seed``), ``root/labels.json`` and ``root/pseudo``: their
    pseudo-masks from the tiny random CLIP, without the CRF (fast), as a segmenter's training input."""
    import json

    from click.testing import CliRunner

    from freelabel.io import write_image
    from freelabel.pipelines.cli import main
    from freelabel.toy.world import scenes

    labels = {}
    for i, scene in enumerate(scenes(seed, n)):
        write_image(root / "images" / f"{i:03d}.png", scene.image)
        labels[f"{i:03d}.png"] = scene.labels
    (root / "labels.json").write_text(json.dumps(labels))
    made = CliRunner().invoke(main, ["generate", str(root / "images"), "--labels", str(root / "labels.json"),
                                     "--out", str(root / "pseudo"), "--no-crf", "--model", "test-tiny-vit",
                                     "--pretrained", "random"])
    assert made.exit_code == 0, made.output


def kill_after_an_epoch(command: list[str], run_dir: Path) -> None:
    """Start ``command`` (a training run) and SIGKILL it from outside once the training state in ``run_dir`` holds a
    finished epoch while later epochs run; fails if the run ends first."""
    from freelabel.segmenter.checkpoint import read_position

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (read_position(run_dir) or {}).get("epoch", 0) >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def pseudo(tmp_path_factory):
    """A generate folder (``pseudo/``) of 16 toy scenes made with the tiny CLIP, beside the scenes."""
    folder = tmp_path_factory.mktemp("pseudo")
    write_toy_pseudo_folder(folder, 7, 16)
    return folder
