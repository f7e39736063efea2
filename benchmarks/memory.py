"""Peak memory of `freelabel generate` does not grow with the number of images: the peak resident set size (RSS) of
`freelabel generate --model freelabel-toy --save-scores` on 1,000 toy scenes vs. on the first 100 of them (goal:
at most 10% more).

The scenes are written by `freelabel toy scenes --seed 4000 --n 1000`; the 100-image folder holds symbolic links
to the first 100 of them and their labels. Each run is its own fresh process, started with `subprocess.Popen` and
reaped with `os.wait4`, whose resource usage is that one child's alone (`RUSAGE_CHILDREN` would be the largest of
all the children so far, the scene writer included).

    .venv/bin/python benchmarks/memory.py [--n 1000] [--small 100] [--seed 4000] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FREELABEL = str(Path(sys.executable).parent / "freelabel")
GOAL = 1.10  # peak RSS for --n images / peak RSS for --small images


def run(args: list[str], log: Path) -> tuple[int, float, float]:
    """Run ``args`` in a fresh process; returns (exit code, its own peak RSS in MB, seconds)."""
    started = time.monotonic()
    with log.open("wb") as handle:
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024, time.monotonic() - started  # Linux: ru_maxrss in KiB


def generate(images: Path, labels: Path, out: Path) -> tuple[float, float, dict]:
    code, peak, seconds = run([FREELABEL, "generate", str(images), "--labels", str(labels), "--out", str(out),
                               "--model", "freelabel-toy", "--save-scores"], out.with_suffix(".log"))
    if code != 0:
        raise SystemExit(f"freelabel generate {images} failed ({code}):\n{out.with_suffix('.log').read_text()[-2000:]}")
    return peak, seconds, json.loads((out / "manifest.json").read_text())["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="scenes in the large run")
    parser.add_argument("--small", type=int, default=100, help="scenes in the small run (the first ones)")
    parser.add_argument("--seed", type=int, default=4000, help="toy scene stream")
    parser.add_argument("--work", type=Path, help="working folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args()
    if not 0 < args.small < args.n:
        raise SystemExit("--small must be between 1 and --n - 1")
    started = time.monotonic()
    work = args.work or Path(tempfile.mkdtemp(prefix="freelabel-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = work / "scenes"
        code, _, seconds = run([FREELABEL, "toy", "scenes", "--seed", str(args.seed), "--n", str(args.n),
                                "--out", str(data)], work / "scenes.log")
        if code != 0:
            raise SystemExit(f"freelabel toy scenes failed ({code}):\n{(work / 'scenes.log').read_text()[-2000:]}")
        print(f"wrote {args.n} scenes in {seconds:.0f} s")
        labels = json.loads((data / "labels.json").read_text())
        small = work / "small"
        (small / "images").mkdir(parents=True)
        first = dict(sorted(labels.items())[:args.small])
        for name in first:
            (small / "images" / name).symlink_to(data / "images" / name)
        (small / "labels.json").write_text(json.dumps(first))

        results = {}
        for count, folder in ((args.small, small), (args.n, data)):
            peak, seconds, summary = generate(folder / "images", folder / "labels.json", work / f"out{count}")
            if summary["done"] != count:
                raise SystemExit(f"expected {count} masks, got {summary}")
            results[count] = (peak, seconds)
            print(f"{count} images: peak RSS {peak:.0f} MB, {seconds:.0f} s ({summary['seconds']} s in the loop)")
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    (small_peak, small_seconds), (large_peak, large_seconds) = results[args.small], results[args.n]
    ratio = large_peak / small_peak
    print(f"memory: peak_rss {args.small} images={small_peak:.0f} MB, {args.n} images={large_peak:.0f} MB, "
          f"ratio={ratio:.3f} (goal <= {GOAL:.2f}: {'ok' if ratio <= GOAL else 'OVER'}), seconds "
          f"{args.small} images={small_seconds:.0f}, {args.n} images={large_seconds:.0f}, "
          f"total {time.monotonic() - started:.0f}")


if __name__ == "__main__":
    main()
