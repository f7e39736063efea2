"""What the benchmark scripts share: running the installed `freelabel` command, and toy data on disk."""

from __future__ import annotations

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
