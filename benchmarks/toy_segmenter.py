"""Self-training in the toy world, as a user runs it: pseudo-masks from `freelabel generate --model freelabel-toy`
(no other flag) for the scenes of a training stream, `freelabel train` on them (no flag: the toy CLIP's training
preset), then on held-out streams `freelabel predict` scored by `freelabel evaluate` (ignored pixels count as wrong):

- (a) `predict --labels` with the true image labels vs `generate` with the same labels on the same scenes;
- (b) `predict` with no labels (the segmenter's own top-k selection) vs (a);
- ablations, each a training run with one flag: `--no-rank-norm`, `--top-k 18` (all classes compete),
  `--backbone-lr-scale 0` (frozen CLIP tower);
- open vocabulary: a run with 3 of the 18 classes left out (`--holdout-labels`, their pixels ignored), asked for
  them by name with `predict --labels`: IoU on those classes next to `generate`'s.

Training stream 4000 (2,000 scenes), test streams 3000-3002 (300 scenes each; never used for training or tuning).
A `--work` folder is reused: finished pseudo-masks, runs and predictions are not redone (the commands resume).

    .venv/bin/python benchmarks/toy_segmenter.py [--work DIR] [--train-scenes 2000] [--n 300] [--no-ablations]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import evaluate, freelabel, spread, toy_scenes

TRAIN_STREAM = 4000
# one of each colour and shape, one striped; fixed before any run (not chosen by results)
HELD_OUT = ("red triangle", "green square", "striped blue circle")
RUNS = {"main": [], "no rank norm": ["--no-rank-norm"], "no top-k (all 18 compete)": ["--top-k", "18"],
        "frozen backbone": ["--backbone-lr-scale", "0"], "held out 3 classes": ["--holdout-labels", ",".join(HELD_OUT)]}


def train(work: Path, pseudo: Path, name: str, flags: list[str]) -> dict:
    """Train (or resume) one run; returns its last metrics line plus the training minutes."""
    run = work / ("run-" + name.split(" (")[0].replace(" ", "-"))
    started = time.monotonic()
    freelabel("train", str(pseudo), "--out", str(run), *flags)
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    return {"run": run, "wall_minutes": (time.monotonic() - started) / 60, **last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="working folder, reused between runs (default: a new temp dir)")
    parser.add_argument("--train-scenes", type=int, default=2000, help="scenes of the training stream")
    parser.add_argument("--n", type=int, default=300, help="test scenes per held-out stream")
    parser.add_argument("--streams", default="3000,3001,3002", help="held-out test streams")
    parser.add_argument("--no-ablations", action="store_true", help="train and score only the main run")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="freelabel-toy-segmenter-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}")

    training = toy_scenes(work, TRAIN_STREAM, args.train_scenes)
    pseudo = work / f"pseudo{TRAIN_STREAM}"
    started = time.monotonic()
    freelabel("generate", str(training / "images"), "--labels", str(training / "labels.json"), "--model",
              "freelabel-toy", "--out", str(pseudo))
    print(f"pseudo-masks for {args.train_scenes} training scenes: {time.monotonic() - started:.0f} s")
    runs = {name: flags for name, flags in RUNS.items() if name == "main" or not args.no_ablations}
    trained = {}
    for name, flags in runs.items():
        trained[name] = train(work, pseudo, name, flags)
        t = trained[name]
        print(f"train {name:28s} {t['epoch']} epochs, {t['minutes']} min of training ({t['wall_minutes']:.1f} min "
              f"wall), {t['images_per_second']} images/s, val mIoU vs pseudo-masks {t.get('val_miou')} own / "
              f"{t.get('val_miou_given_labels')} given labels")

    scores: dict[str, list[dict]] = {}
    for seed in (int(s) for s in args.streams.split(",")):
        data = toy_scenes(work, seed, args.n)
        labels = str(data / "labels.json")
        outputs = {"generate": ["generate", str(data / "images"), "--labels", labels, "--model", "freelabel-toy"]}
        for name, t in trained.items():
            outputs[f"predict --labels ({name})"] = ["predict", str(t["run"]), str(data / "images"), "--labels",
                                                     labels]
        outputs["predict, own labels (main)"] = ["predict", str(trained["main"]["run"]), str(data / "images")]
        for what, command in outputs.items():
            out = work / (f"out{seed}-" + "".join(c if c.isalnum() else "_" for c in what))
            started = time.monotonic()
            freelabel(*command, "--out", str(out))
            report = evaluate(out, data)
            report["seconds"] = time.monotonic() - started
            scores.setdefault(what, []).append(report)
            print(f"stream {seed} {what:45s} mIoU={report['miou']:.4f} ignored={report['ignored_fraction']:.4f} "
                  f"({report['seconds']:.0f} s)")

    def held_out_iou(report: dict) -> float:
        return statistics.mean(report["iou"][report["classes"].index(name)] for name in HELD_OUT)

    generate, given = scores["generate"], scores["predict --labels (main)"]
    gain = [g["miou"] - p["miou"] for g, p in zip(given, generate)]
    parts = [f"generate (pseudo-masks) {spread([r['miou'] for r in generate])}",
             f"(a) predict --labels {spread([r['miou'] for r in given])} (gain {spread(gain)})",
             f"(b) predict own labels {spread([r['miou'] for r in scores['predict, own labels (main)']])}"]
    for name in runs:
        if name not in ("main", "held out 3 classes"):
            parts.append(f"{name} {spread([r['miou'] for r in scores[f'predict --labels ({name})']])}")
    if "held out 3 classes" in runs:
        unseen = [held_out_iou(r) for r in scores["predict --labels (held out 3 classes)"]]
        parts.append(f"held-out classes IoU: predict {spread(unseen)} vs generate "
                     f"{spread([held_out_iou(r) for r in generate])}")
    main_run = trained["main"]
    print(f"toy_segmenter: {len(generate)} streams x {args.n} held-out scenes, trained on {args.train_scenes} "
          f"pseudo-masks ({main_run['epoch']} epochs, {main_run['minutes']} min on {main_run['images_per_second']} "
          "images/s): " + "; ".join(parts))


if __name__ == "__main__":
    main()
