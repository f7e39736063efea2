"""A killed `freelabel generate` resumes to exactly what an uninterrupted run writes (integration, real SIGKILLs)."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from freelabel.pipelines.toy import write_toy_scenes

pytestmark = pytest.mark.slow
COMMAND = [sys.executable, "-m", "freelabel.pipelines.cli", "generate"]
KILLS = 12
SCENES = 60


def _args(data: Path, out: Path, labels: str = "labels.json") -> list[str]:
    return [*COMMAND, str(data / "images"), "--labels", str(data / labels), "--out", str(out),
            "--model", "freelabel-toy", "--save-scores"]


def _outputs(out: Path) -> dict[str, str]:
    """Hash of every mask, score file and classes.txt below ``out``, by relative path."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
            if p.is_file() and (p.suffix in (".png", ".npz") or p.name == "classes.txt")}


def _stray(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_toy_scenes(tmp_path_factory.mktemp("scenes"), seed=21, n=SCENES)


def _kill_when(args: list[str], ready) -> None:
    """Start ``args`` and SIGKILL it as soon as ``ready()`` is true (polled every few milliseconds)."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and not ready():
        time.sleep(0.003)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_sigkilled_runs_resume_to_byte_identical_outputs(data, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_args(data, reference), check=True, capture_output=True)

    out = tmp_path / "out"
    masks = lambda: len(list(out.rglob("*.png"))) if out.is_dir() else 0  # noqa: E731
    rng = random.Random(0)
    # two kills at random moments before the model has loaded (no mask yet), then kills at random points of the
    # run (as soon as a randomly drawn number of masks exists: writes of the next images are under way)
    for delay in (rng.uniform(0.05, 0.5), rng.uniform(0.5, 1.5)):
        started = time.monotonic()
        _kill_when(_args(data, out), lambda: time.monotonic() - started > delay)
        assert masks() == 0
    for target in sorted(rng.sample(range(1, SCENES), KILLS - 2)):
        _kill_when(_args(data, out), lambda: masks() >= target)
    assert 0 < masks() < SCENES
    # what a kill in the middle of a write leaves: a temp file beside its target, a journal line cut short
    if (out / "journal.jsonl").is_file():
        (out / "images").mkdir(exist_ok=True)
        (out / ".000007.png.k1ll3d.tmp.png").write_bytes(b"\x89PNG half")
        with open(out / "journal.jsonl", "a") as journal:
            journal.write('{"image": "000059.png", "sta')
    finished = subprocess.run(_args(data, out), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr

    assert _outputs(out) == _outputs(reference)
    assert len(_outputs(out)) == 2 * SCENES + 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["images"]) == SCENES and all(e["status"] == "done" for e in manifest["images"].values())
    assert not _stray(out) and (out / "errors.jsonl").read_text() == ""

    # resuming with other labels is refused and touches nothing; --overwrite redoes the folder for them
    labels = json.loads((data / "labels.json").read_text())
    first = next(iter(labels))
    labels[first] = [*labels[first], "green square"] if "green square" not in labels[first] else ["red circle"]
    (data / "changed.json").write_text(json.dumps(labels))
    before = _outputs(out)
    refused = subprocess.run(_args(data, out, "changed.json"), capture_output=True, text=True)
    assert refused.returncode == 2 and "another job" in refused.stderr and "Traceback" not in refused.stderr
    assert _outputs(out) == before
    redone = subprocess.run(_args(data, out, "changed.json") + ["--overwrite"], capture_output=True, text=True)
    assert redone.returncode == 0, redone.stderr
    assert f"{SCENES} masks written" in redone.stdout
    assert json.loads((out / "job.json").read_text())["classes"] == ["background", *dict.fromkeys(
        label for image_labels in labels.values() for label in image_labels)]
