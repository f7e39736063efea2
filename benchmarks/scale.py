"""Does the Ray engine lose anything on one machine? `freelabel generate --model freelabel-toy` (the product's
defaults) on ``--n`` toy scenes with the local engine and with `--engine ray --workers 1` and `--workers 2`.

For each: images/s of the whole command (process start to exit: Python, model load, Ray start and its actors
included), and without start-up (images journaled after the first, over the time from the first journal entry to
the last: what a long run sees). Goal: Ray with 2 workers at least 0.8x the local engine without start-up. One
machine is Ray's worst case (its scheduling and transfers cost, and the 2 workers share 2 cores that the local
engine's one process uses alone); the point is that nothing is lost when the same command spreads over a cluster.
Masks are compared byte for byte with the local engine's. Run nothing else meanwhile.

    .venv/bin/python benchmarks/scale.py [--n 1000] [--work DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import FREELABEL, toy_scenes

STREAM = 6100  # a stream no quality figure uses: only speed is measured here


def journal_times(journal: Path, stop: threading.Event, times: list[float]) -> None:
    """Append the time at which each new journal line appeared (polled every 20 ms) until ``stop``."""
    seen = 0
    while not stop.is_set():
        lines = journal.read_bytes().count(b"\n") if journal.is_file() else 0
        times.extend([time.monotonic()] * (lines - seen))
        seen = lines
        time.sleep(0.02)


def run(data: Path, out: Path, *flags: str) -> tuple[float, float]:
    """The command's images/s as a whole and without start-up."""
    times: list[float] = []
    stop = threading.Event()
    watcher = threading.Thread(target=journal_times, args=(out / "journal.jsonl", stop, times))
    watcher.start()
    started = time.monotonic()
    done = subprocess.run([FREELABEL, "generate", str(data / "images"), "--labels", str(data / "labels.json"),
                           "--model", "freelabel-toy", "--out", str(out), *flags], capture_output=True, text=True)
    whole = time.monotonic() - started
    time.sleep(0.1)
    stop.set()
    watcher.join()
    if done.returncode != 0:
        raise SystemExit(f"generate {' '.join(flags)} failed:\n{done.stderr[-2000:]}")
    return len(times) / whole, (len(times) - 1) / (times[-1] - times[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="toy scenes")
    parser.add_argument("--work", type=Path, help="working folder (default: a new temp dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="freelabel-scale-"))
    data = toy_scenes(work, STREAM, args.n)
    engines = {"local": (), "ray 1 worker": ("--engine", "ray", "--workers", "1"),
               "ray 2 workers": ("--engine", "ray", "--workers", "2")}
    rates = {}
    for name, flags in engines.items():
        out = work / name.replace(" ", "-")
        rates[name] = run(data, out, *flags)
        print(f"{name:14s} whole command {rates[name][0]:6.1f} images/s, without start-up {rates[name][1]:6.1f}")
        if name != "local":
            local = work / "local"
            differ = [p.name for p in sorted(local.glob("*.png")) if p.read_bytes() != (out / p.name).read_bytes()]
            if differ:
                raise SystemExit(f"{name}: {len(differ)} masks differ from the local engine's, e.g. {differ[:3]}")
    local = rates["local"]
    print(f"scale: {args.n} toy scenes, images/s whole command / without start-up: "
          + "; ".join(f"{name} {whole:.1f} / {steady:.1f}" for name, (whole, steady) in rates.items())
          + f"; ray 2 workers / local without start-up {rates['ray 2 workers'][1] / local[1]:.2f}x (goal >= 0.8), "
            "masks byte-identical")


if __name__ == "__main__":
    main()
