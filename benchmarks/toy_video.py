"""Video end to end in the toy world (toy CLIP): `freelabel generate` on every frame vs `freelabel video --labels`
(every K-th frame and the last segmented, the rest propagated), both given each clip's labels (the classes seen
anywhere in it), scored by `freelabel evaluate` against the exact masks (ignored = wrong); encoder passes (images
segmented) and frames/s of both in the same run. Then peak memory of `freelabel video` on a 2,000-frame video file
next to a 200-frame one (each in a fresh process).

Reported on held-out clip stream 3100 (never used for training or tuning); video's settings were chosen on stream
5000 (``--stream 5000 --memory-frames '' --video-option=--no-refine`` and the like).

    .venv/bin/python benchmarks/toy_video.py [--clips 12] [--interval 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
from common import evaluate, freelabel

from freelabel.io import class_lookup, read_classes, read_image, read_mask, write_mask
from freelabel.io.masks import IGNORE_INDEX

STREAM = 3100


def peak_rss_mb(args: list[str]) -> float:
    """Peak resident memory, in MB, of the `freelabel` command ``args`` run in a fresh Python process."""
    code = ("import resource, sys; from freelabel.pipelines.cli import main; "
            "main(sys.argv[1:], standalone_mode=False); "
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    peak = [line for line in done.stderr.splitlines() if line.startswith("PEAK ")]
    if done.returncode != 0 or not peak:
        raise SystemExit(done.stderr[-2000:])
    return int(peak[-1].split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--interval", type=int, default=5, help="key-frame interval K")
    parser.add_argument("--stream", type=int, default=STREAM, help="toy clip stream (5000: the tuning one)")
    parser.add_argument("--video-option", action="append", default=[], help="passed to freelabel video (tuning)")
    parser.add_argument("--memory-frames", default="200,2000", help="video lengths for the memory figure ('': none)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="freelabel-toy-video-"))
    data = work / "clips"
    freelabel("toy", "clips", "--seed", str(args.stream), "--n", str(args.clips), "--out", str(data))
    frame_labels = json.loads((data / "labels.json").read_text())
    clip_labels: dict[str, list[str]] = {}
    for name, labels in frame_labels.items():
        clip_labels.setdefault(name.split("/")[0], [])
        clip_labels[name.split("/")[0]] += [label for label in labels if label not in clip_labels[name.split("/")[0]]]
    (work / "labels.json").write_text(json.dumps({name: clip_labels[name.split("/")[0]] for name in frame_labels}))
    freelabel("generate", str(data / "images"), "--labels", str(work / "labels.json"), "--model", "freelabel-toy",
              "--out", str(work / "generate"))
    per_frame = json.loads((work / "generate" / "manifest.json").read_text())["summary"]
    video_seconds, key_frames = 0.0, 0
    for clip, labels in sorted(clip_labels.items()):
        freelabel("video", str(data / "images" / clip), "--labels", ",".join(labels), "--key-interval",
                  str(args.interval), "--model", "freelabel-toy", "--out", str(work / "video" / clip),
                  *args.video_option)
        summary = json.loads((work / "video" / clip / "manifest.json").read_text())["summary"]
        video_seconds, key_frames = video_seconds + summary["seconds"], key_frames + summary["key_frames"]
    # each clip's folder indexes its own labels: into the data's class index, as one folder to evaluate
    classes = read_classes(data / "classes.txt")
    for clip in clip_labels:
        table = class_lookup(read_classes(work / "video" / clip / "classes.txt"), classes, unknown=IGNORE_INDEX)
        for mask in (work / "video" / clip).glob("*.png"):
            write_mask(work / "video-all" / clip / mask.name, table[read_mask(mask)].astype("uint8"))
    frames = len(frame_labels)
    generate_report, video_report = evaluate(work / "generate", data), evaluate(work / "video-all", data)
    print(f"generate every frame: mIoU {generate_report['miou']:.4f}, {frames} encoder passes, "
          f"{frames / per_frame['seconds']:.1f} frames/s")
    print(f"video K={args.interval}: mIoU {video_report['miou']:.4f} (ignored {video_report['ignored_fraction']:.4f}),"
          f" {key_frames} encoder passes, {frames / video_seconds:.1f} frames/s")

    memory = {}
    for n in (int(v) for v in args.memory_frames.split(",") if v):
        path = work / f"long{n}.avi"
        writer = None
        for i in range(n):  # the clips' frames over and over
            name = sorted(frame_labels)[i % frames]
            frame = read_image(data / "images" / name)
            if writer is None:
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 24, frame.shape[1::-1])
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        labels = sorted({label for labels in clip_labels.values() for label in labels})
        memory[n] = peak_rss_mb(["video", str(path), "--labels", ",".join(labels), "--model", "freelabel-toy",
                                 "--out", str(work / f"long{n}")])
    print(f"toy_video: {args.clips} clips of stream {args.stream} ({frames} frames): generate every frame mIoU "
          f"{generate_report['miou']:.4f} vs video K={args.interval} {video_report['miou']:.4f} "
          f"({100 * (video_report['miou'] - generate_report['miou']):+.1f} points), encoder passes {frames} vs "
          f"{key_frames} ({frames / key_frames:.1f}x fewer), {frames / per_frame['seconds']:.1f} vs "
          f"{frames / video_seconds:.1f} frames/s; peak RSS "
          + ", ".join(f"{n} frames {mb:.0f} MB" for n, mb in memory.items()))


if __name__ == "__main__":
    main()
