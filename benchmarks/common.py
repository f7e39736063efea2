"""What the benchmark scripts share: running the installed `freelabel` command, toy data on disk, the toy
validation stream's `tune`, scoring a `generate` run, and the spread over held-out streams."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

FREELABEL = str(Path(sys.executable).parent / "freelabel")


def freelabel(*args: str) -> str:
    """Run the installed `freelabel` command; returns its standard output, fails loudly on a non-zero exit."""
    done = subprocess.run([FREELABEL, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"freelabel {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def toy_scenes(work: Path, seed: int, n: int) -> Path:
    """Scenes 0..n-1 of toy stream ``seed`` under ``work`` (written once, reused when already there)."""
    folder = work / f"stream{seed}-{n}"
    if not (folder / "config.json").is_file():
        freelabel("toy", "scenes", "--seed", str(seed), "--n", str(n), "--out", str(folder))
    return folder


# where toy settings are chosen: 400 scenes of stream 2001, never a measured stream
VALIDATION_STREAM, VALIDATION_SCENES = 2001, 400


def tune_toy(work: Path, out: Path, *flags: str, workers: int = 2, scenes: int = VALIDATION_SCENES) -> str:
    """`freelabel tune` for the toy CLIP on the first ``scenes`` of the validation stream (30% held out for its
    report), from the library default preset, with ``flags`` added; writes the preset to ``out`` and returns tune's
    report line."""
    validation = toy_scenes(work, VALIDATION_STREAM, scenes)
    return freelabel("tune", str(validation / "images"), "--masks", str(validation / "masks"), "--classes",
                     str(validation / "classes.txt"), "--model", "freelabel-toy", "--out", str(out), "--preset",
                     "default", "--workers", str(workers), *flags).strip()


def evaluate(pred: Path, data: Path, *flags: str) -> dict:
    """`freelabel evaluate`'s report (miou, dense_miou, ignored_fraction, ...) of the masks in ``pred`` against the
    toy folder ``data``'s true masks; ``flags`` e.g. ``--allow-missing``."""
    return json.loads(freelabel("evaluate", "--pred", str(pred), "--gt", str(data / "masks"), "--classes",
                                str(data / "classes.txt"), "--json", *flags))


def score(data: Path, out: Path, flags: list[str]) -> dict:
    """`freelabel generate --model freelabel-toy` for the toy folder ``data`` with ``flags`` into ``out`` (scores
    saved), then `freelabel evaluate`'s report (miou, dense_miou, ignored_fraction, ...)."""
    freelabel("generate", str(data / "images"), "--labels", str(data / "labels.json"), "--model", "freelabel-toy",
              "--out", str(out), "--save-scores", *flags)
    return evaluate(out, data)


def spread(values: list[float]) -> str:
    """Mean [min-max] of per-stream figures, 3 decimals."""
    return f"{statistics.mean(values):.3f} [{min(values):.3f}-{max(values):.3f}]"
