"""Mask propagation on real video with true masks on key frames: `freelabel video FRAMES --key-masks DIR` (no
CLIP), the masks of every K-th frame given, scored on the frames between, next to copying the nearest key frame's
mask unchanged. DAVIS 2016 val (3 sequences, 480p): IoU of the object, averaged over the frames between, then over
sequences. CamVid val (101 frames, 2 raw frames apart): mIoU over the 11 classes with void ignored. Pixels left 255
count as wrong in both; their share is reported.

``--toy STREAM``: the same on 12 toy clips of that stream (true masks, mIoU, ignored = wrong) instead: where the
key-masks settings are chosen (stream 5000), never on the real clips above, which only report.

    .venv/bin/python benchmarks/video_propagation.py [--intervals 3,5,10] [--toy 5000] [--video-option=--refine]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import freelabel

from freelabel.io import read_classes, read_mask
from freelabel.io.masks import IGNORE_INDEX
from freelabel.metrics import ConfusionMatrix

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
CAMVID_VOID = 11


def key_masks(masks: list[Path], interval: int, classes: Path, folder: Path) -> list[int]:
    """Link every ``interval``-th mask into ``folder`` (with classes.txt); returns the key frame positions."""
    folder.mkdir(parents=True)
    shutil.copy(classes, folder / "classes.txt")
    keys = list(range(0, len(masks), interval))
    for position in keys:
        (folder / masks[position].name).symlink_to(masks[position])
    return keys


def nearest(position: int, keys: list[int]) -> int:
    return min(keys, key=lambda k: (abs(k - position), k))


def run_clip(frames: Path, masks: list[Path], classes: Path, interval: int, work: Path, options: list[str]
             ) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], float]:
    """Propagate one clip's key masks; returns (propagated, copied, truth) per frame between, and the seconds."""
    keys = key_masks(masks, interval, classes, work / "keys")
    started = time.monotonic()
    freelabel("video", str(frames), "--key-masks", str(work / "keys"), "--out", str(work / "out"), *options)
    seconds = time.monotonic() - started
    scored = []
    for position, mask_path in enumerate(masks):
        if position in keys:
            continue
        truth = read_mask(mask_path)
        scored.append((read_mask(work / "out" / mask_path.name), read_mask(masks[nearest(position, keys)]), truth))
    return scored, seconds


def object_iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    predicted, target = prediction == 1, truth == 1
    union = (predicted | target).sum()
    return float((predicted & target).sum() / union) if union else 1.0


def toy(stream: int, intervals: list[int], options: list[str], work: Path) -> None:
    """The tuning figure: 12 toy clips of ``stream``, true masks on every K-th frame."""
    data = work / "clips"
    freelabel("toy", "clips", "--seed", str(stream), "--n", "12", "--out", str(data))
    classes = data / "classes.txt"
    summary = []
    for interval in intervals:
        matrices = {"propagated": ConfusionMatrix(len(read_classes(classes))),
                    "copy": ConfusionMatrix(len(read_classes(classes)))}
        for clip in sorted(p.name for p in (data / "images").iterdir()):
            masks = sorted((data / "masks" / clip).glob("*.png"))
            scored, _ = run_clip(data / "images" / clip, masks, classes, interval, work / f"{clip}-{interval}", options)
            for p, c, t in scored:
                matrices["propagated"].update(p, t)
                matrices["copy"].update(c, t)
        summary.append(f"K={interval}: mIoU propagated {matrices['propagated'].miou():.4f} vs copy "
                       f"{matrices['copy'].miou():.4f}, ignored {matrices['propagated'].ignored_fraction():.4f}")
    print(" ".join(["video_propagation toy stream", str(stream), *options]) + ": " + " | ".join(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intervals", default="3,5,10", help="key-frame intervals K")
    parser.add_argument("--toy", type=int, help="toy clip stream to measure instead of the real clips (tuning)")
    parser.add_argument("--video-option", action="append", default=[], help="passed to freelabel video (tuning)")
    args = parser.parse_args()
    intervals = [int(k) for k in args.intervals.split(",")]
    work = Path(tempfile.mkdtemp(prefix="freelabel-video-bench-"))
    if args.toy is not None:
        return toy(args.toy, intervals, args.video_option, work)
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    davis, camvid = DATA / "davis2016-val", DATA / "camvid-val"
    summary = []
    for interval in intervals:
        propagated, copied, ignored, frames_done, seconds = [], [], [], 0, 0.0
        for sequence in sorted(p.name for p in (davis / "images").iterdir()):
            masks = sorted((davis / "masks" / sequence).glob("*.png"))
            scored, took = run_clip(davis / "images" / sequence, masks, davis / "classes.txt", interval,
                                    work / f"davis-{sequence}-{interval}", args.video_option)
            propagated.append(statistics.mean(object_iou(p, t) for p, _, t in scored))
            copied.append(statistics.mean(object_iou(c, t) for _, c, t in scored))
            ignored.append(statistics.mean(float((p == IGNORE_INDEX).mean()) for p, _, _ in scored))
            frames_done, seconds = frames_done + len(masks), seconds + took
        davis_line = (f"DAVIS J propagated {statistics.mean(propagated):.3f} vs copy {statistics.mean(copied):.3f} "
                      f"(per sequence {', '.join(f'{p:.3f}/{c:.3f}' for p, c in zip(propagated, copied))}), "
                      f"ignored {statistics.mean(ignored):.3f}")
        masks = sorted((camvid / "masks").glob("*.png"))
        scored, took = run_clip(camvid / "images", masks, camvid / "classes.txt", interval, work / f"camvid-{interval}",
                                args.video_option)
        frames_done, seconds = frames_done + len(masks), seconds + took
        matrices = {"propagated": ConfusionMatrix(CAMVID_VOID), "copy": ConfusionMatrix(CAMVID_VOID)}
        for p, c, t in scored:
            t = np.where(t == CAMVID_VOID, IGNORE_INDEX, t)
            matrices["propagated"].update(p, t)
            matrices["copy"].update(np.where(c == CAMVID_VOID, IGNORE_INDEX, c), t)
        camvid_ignored = statistics.mean(float((p == IGNORE_INDEX).mean()) for p, _, _ in scored)
        line = (f"K={interval}: {davis_line}; CamVid mIoU propagated {matrices['propagated'].miou():.3f} vs copy "
                f"{matrices['copy'].miou():.3f}, ignored {camvid_ignored:.3f}; {frames_done / seconds:.1f} frames/s "
                "end to end")
        print(line, flush=True)
        summary.append(line)
    print(json.dumps({"work": str(work)}))
    print(" ".join(["video_propagation", *args.video_option]) + ": " + " | ".join(summary))


if __name__ == "__main__":
    main()
