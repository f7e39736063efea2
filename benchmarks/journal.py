"""Can one driver keep up with a cluster? The driver of a labelling run (local or Ray) is the one writer of the
output folder's journal: each finished batch is one append and one flush to disk (``JobFolder.record_all``). This
measures the entries per second that writer takes when each append holds 1, 8 or 64 entries, with manifest-sized
entries, on the disk of ``--work``; and what a manifest rebuild of that many entries costs (the driver does one every
30 s while running, and one at the end). The local engine appends one batch at a time (its batch size); the Ray
driver appends everything that finished since its last append, so under load its appends grow and the 64 figure
is a lower bound of what it takes when saturated.

From it, a model of a cluster's throughput: a run is bound by min(workers x per-worker images/s, the writer's
entries/s), so the writer serves writer / per-worker workers. Goal: >= 2,000 entries/s, so that 100 GPUs at 20
images/s each do not wait on it.

    .venv/bin/python benchmarks/journal.py [--n 20000] [--per-worker 20] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from freelabel.run.folder import JobFolder


def entry(index: int) -> tuple[str, dict]:
    """A realistic journal entry: what ``write_job`` journals for an image with three labels."""
    return f"images/{index // 1000:04d}/{index:08d}.jpg", {
        "status": "done", "labels": ["person", "bicycle", "traffic light"], "ignored_fraction": 0.1234}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="entries per batch size")
    parser.add_argument("--per-worker", type=float, default=20.0, help="images/s of one worker, for the model")
    parser.add_argument("--work", type=Path, help="folder on the disk to measure (default: a temp dir)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="freelabel-journal-", dir=args.work))
    rates = {}
    try:
        for batch_size in (1, 8, 64):
            out = work / f"batch{batch_size}"
            folder = JobFolder(out, {"classes": ["background"], "settings": {}}, overwrite=False)
            entries = [entry(i) for i in range(args.n)]
            with folder.open(["background"]):
                started = time.perf_counter()
                for start in range(0, args.n, batch_size):
                    folder.record_all(entries[start:start + batch_size])
                rates[batch_size] = args.n / (time.perf_counter() - started)
                started = time.perf_counter()
                folder.write_records({}, folder.status(), str)
                rebuild = time.perf_counter() - started
            print(f"batch {batch_size:3d}: {rates[batch_size]:8.0f} entries/s; manifest rebuild of {args.n} entries "
                  f"{rebuild:.2f} s")
    finally:
        shutil.rmtree(work)
    served = {size: rate / args.per_worker for size, rate in rates.items()}
    print(f"journal: the driver's writer takes {rates[1]:.0f} / {rates[8]:.0f} / {rates[64]:.0f} entries/s at batches "
          f"of 1 / 8 / 64 (goal >= 2000); at {args.per_worker:g} images/s per worker one driver serves "
          f"{served[1]:.0f} / {served[8]:.0f} / {served[64]:.0f} workers; manifest rebuild {rebuild:.2f} s per "
          f"{args.n} entries")


if __name__ == "__main__":
    main()
