"""Does a little correction pay? The correction loop of docs/review.md in the toy world, as a user runs it.

Pseudo-masks for the 2,000 scenes of training stream 4000 (`freelabel generate --model freelabel-toy`, no other
flag); the 50 worst of them (highest ignored fraction, the review page's first and `export --worst 50`'s) are
"corrected": their exact masks stand for a person's corrections and travel the way a person's would, exported to
CVAT's format (`freelabel export --format cvat`) and read back (`freelabel import`). Then:

- `freelabel train PSEUDO --corrected CORRECTED` against `freelabel train PSEUDO` (the toy training preset, no other
  flag), each scored by `freelabel predict --labels` (true image labels) on the held-out streams;
- `freelabel tune` on the 50 corrected images (from the library default preset, as a user fits their own), its
  preset against the shipped toy preset, each scored by `freelabel generate` on the held-out streams.

Held-out streams 3000-3002 (300 scenes each; never used for training or tuning); every score is
`freelabel evaluate`'s mIoU (ignored = wrong), mean [min-max] over the streams. A `--work` folder is reused.

    .venv/bin/python benchmarks/toy_corrections.py [--work DIR] [--corrections 50] [--n 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import evaluate, freelabel, spread, toy_scenes

TRAIN_STREAM, TRAIN_SCENES = 4000, 2000


def corrected_masks(work: Path, training: Path, pseudo: Path, count: int) -> Path:
    """The ``count`` worst pseudo-masks' exact masks, exported to CVAT and imported back: what `--corrected` gets
    after a person fixed them in CVAT."""
    images = json.loads((pseudo / "manifest.json").read_text())["images"]
    done = [name for name, entry in images.items() if entry["status"] == "done"]
    worst = sorted(done, key=lambda name: (-images[name]["ignored_fraction"], name))[:count]
    truth = work / "truth-of-worst"
    shutil.rmtree(truth, ignore_errors=True)
    truth.mkdir(parents=True)
    shutil.copy(training / "classes.txt", truth / "classes.txt")
    for name in worst:
        shutil.copy(training / "masks" / Path(name).with_suffix(".png"), truth / Path(name).with_suffix(".png"))
    freelabel("export", str(truth), "--format", "cvat", "--images", str(training / "images"), "--out",
              str(work / "cvat"))
    corrected = work / "corrected"
    freelabel("import", str(work / "cvat"), "--format", "cvat", "--out", str(corrected), "--classes",
              str(pseudo / "classes.txt"))
    subset = work / "corrected-images"  # tune reads the images beside the masks
    subset.mkdir(exist_ok=True)
    for name in worst:
        if not (subset / name).exists():
            (subset / name).symlink_to(training / "images" / name)
    return corrected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="working folder, reused between runs (default: a new temp dir)")
    parser.add_argument("--corrections", type=int, default=50, help="pseudo-masks replaced by corrected ones")
    parser.add_argument("--n", type=int, default=300, help="test scenes per held-out stream")
    parser.add_argument("--streams", default="3000,3001,3002", help="held-out test streams")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="freelabel-toy-corrections-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}")

    training = toy_scenes(work, TRAIN_STREAM, TRAIN_SCENES)
    pseudo = work / "pseudo"
    freelabel("generate", str(training / "images"), "--labels", str(training / "labels.json"), "--model",
              "freelabel-toy", "--out", str(pseudo))
    corrected = corrected_masks(work, training, pseudo, args.corrections)
    runs = {"pseudo-masks alone": [], f"with {args.corrections} corrected": ["--corrected", str(corrected)]}
    for name, flags in runs.items():
        started = time.monotonic()
        freelabel("train", str(pseudo), "--out", str(work / f"run-{len(flags)}"), *flags)
        print(f"train {name}: {(time.monotonic() - started) / 60:.1f} min")
    started = time.monotonic()
    freelabel("tune", str(work / "corrected-images"), "--masks", str(corrected), "--classes",
              str(corrected / "classes.txt"), "--model", "freelabel-toy", "--preset", "default", "--out",
              str(work / "preset-from-corrections.json"))
    print(f"tune on {args.corrections} corrected masks: {time.monotonic() - started:.0f} s")

    scores: dict[str, list[float]] = {}
    for seed in (int(s) for s in args.streams.split(",")):
        data = toy_scenes(work, seed, args.n)
        images, labels = str(data / "images"), str(data / "labels.json")
        commands = {f"predict --labels, {name}": ["predict", str(work / f"run-{len(flags)}"), images, "--labels",
                                                  labels] for name, flags in runs.items()}
        commands["generate, shipped preset"] = ["generate", images, "--labels", labels, "--model", "freelabel-toy"]
        commands[f"generate, preset tuned on {args.corrections} corrected"] = [
            "generate", images, "--labels", labels, "--model", "freelabel-toy", "--preset",
            str(work / "preset-from-corrections.json")]
        for what, command in commands.items():
            out = work / (f"out{seed}-" + "".join(c if c.isalnum() else "_" for c in what))
            freelabel(*command, "--out", str(out))
            scores.setdefault(what, []).append(evaluate(out, data)["miou"])
            print(f"stream {seed} {what:50s} mIoU={scores[what][-1]:.4f}")
    names = list(runs)
    gain = [c - p for p, c in zip(scores[f"predict --labels, {names[0]}"], scores[f"predict --labels, {names[1]}"])]
    print(f"toy_corrections: {len(gain)} streams x {args.n} held-out scenes; "
          + "; ".join(f"{what} {spread(values)}" for what, values in scores.items())
          + f"; the corrections' gain for the segmenter {spread(gain)}")


if __name__ == "__main__":
    main()
