"""Do self-training rounds pay? `freelabel train --rounds N` in the toy world, as a user runs it.

Pseudo-masks of the 2,000 scenes of training stream 4000 (`freelabel generate --model freelabel-toy`), one round of
`freelabel train` on them (the toy training preset), then more rounds: each trains on the previous round's masks of
the training images. Where the rounds start (the previous round's weights or scratch) and how many the toy preset
trains are chosen on validation stream 2001 (`predict --labels`, 300 scenes); the figures are `predict --labels
--round R` on the held-out streams 3000-3002 (300 scenes each; never used to choose), scored by `freelabel
evaluate` (mIoU, ignored = wrong), mean [min-max] over the streams, with the minutes of each round (training, then
the masks it trains on). The figures' run is trained with the toy preset's `round_start` (no flag): when it is not
the start chosen on stream 2001, the script says what to write into the preset and stops before them.

Every step resumes (the run folders, the mask folders), so an interrupted benchmark finishes when run again with the
same --work. `--pseudo` and `--run` reuse a `generate` folder and a finished one-round `train` run on it (the run is
copied, then extended to more rounds in the copy; neither is modified).

    .venv/bin/python benchmarks/toy_self_training.py [--work DIR] [--pseudo PSEUDO --run RUN] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from freelabel.clip.config import ClipConfig
from freelabel.segmenter.trainer import train_config

from common import evaluate, freelabel, spread, toy_scenes

TRAIN_STREAM, TRAIN_SCENES, VALIDATION_STREAM = 4000, 2000, 2001
STARTS = ("previous", "scratch")


def round_score(work: Path, run: Path, round_number: int, data: Path) -> float:
    """`predict --labels --round R` of ``run`` on ``data``, scored."""
    out = work / f"out-{run.name}-round{round_number}-{data.name}"
    freelabel("predict", str(run), str(data / "images"), "--labels", str(data / "labels.json"), "--round",
              str(round_number), "--out", str(out))
    return evaluate(out, data)["miou"]


def round_minutes(run: Path, round_number: int) -> tuple[float, float]:
    """Round ``round_number``'s training minutes (all its launches) and the minutes of the masks it trained on."""
    folder = run if round_number == 1 else run / f"round-{round_number}"
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    masks = folder / "masks" / "manifest.json"
    seconds = json.loads(masks.read_text())["summary"]["seconds"] if masks.is_file() else 0.0
    return lines[-1]["minutes"], seconds / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="working folder, reused between runs (default: a new temp dir)")
    parser.add_argument("--pseudo", type=Path, help="an existing generate folder of the training stream")
    parser.add_argument("--run", type=Path, help="a finished one-round train run on --pseudo, copied")
    parser.add_argument("--rounds", type=int, default=3, help="rounds compared (1..rounds)")
    parser.add_argument("--n", type=int, default=300, help="scenes per validation and held-out stream")
    parser.add_argument("--streams", default="3000,3001,3002", help="held-out test streams")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="freelabel-toy-self-training-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}", flush=True)

    pseudo = args.pseudo
    if pseudo is None:
        training = toy_scenes(work, TRAIN_STREAM, TRAIN_SCENES)
        pseudo = work / "pseudo"
        freelabel("generate", str(training / "images"), "--labels", str(training / "labels.json"), "--model",
                  "freelabel-toy", "--out", str(pseudo))
    runs = {start: work / f"run-{start}" for start in STARTS}
    for run in runs.values():
        if args.run is not None and not run.exists():
            shutil.copytree(args.run, run)

    # the choices, on the validation stream: where round 2 starts, then how many rounds
    validation = toy_scenes(work, VALIDATION_STREAM, args.n)
    chosen: dict[str, float] = {}
    for start, run in runs.items():
        freelabel("train", str(pseudo), "--out", str(run), "--rounds", "2", "--round-start", start)
        chosen[start] = round_score(work, run, 2, validation)
        print(f"validation {VALIDATION_STREAM}, round 2 from {start}: mIoU={chosen[start]:.4f}", flush=True)
    best = max(chosen, key=chosen.get)
    freelabel("train", str(pseudo), "--out", str(runs[best]), "--rounds", str(args.rounds), "--round-start", best)
    by_round = {r: (chosen[best] if r == 2 else round_score(work, runs[best], r, validation))
                for r in range(1, args.rounds + 1)}
    print(f"validation {VALIDATION_STREAM}, rounds from {best}: "
          + ", ".join(f"round {r} {score:.4f}" for r, score in by_round.items()), flush=True)

    # the figures, on the held-out streams; the run trained with the toy preset's choice (no --round-start)
    if train_config(ClipConfig(model="freelabel-toy")).round_start != best:
        raise SystemExit(f"toy_self_training: round 2 from {best} scored best on stream {VALIDATION_STREAM}; write "
                         f"\"round_start\": \"{best}\" into the training preset of "
                         "freelabel/model_cards/freelabel-toy.json, then run again")
    freelabel("train", str(pseudo), "--out", str(runs[best]), "--rounds", str(args.rounds))
    scores: dict[int, list[float]] = {r: [] for r in range(1, args.rounds + 1)}
    for seed in (int(s) for s in args.streams.split(",")):
        data = toy_scenes(work, seed, args.n)
        for r in scores:
            scores[r].append(round_score(work, runs[best], r, data))
            print(f"stream {seed} round {r}: mIoU={scores[r][-1]:.4f}", flush=True)
    minutes = {r: round_minutes(runs[best], r) for r in scores}
    print(f"toy_self_training: {len(scores[1])} streams x {args.n} held-out scenes, predict --labels; "
          + "; ".join(f"round {r} {spread(values)} (train {minutes[r][0]:.1f} min"
                      + (f", masks {minutes[r][1]:.1f} min)" if r > 1 else ")") for r, values in scores.items())
          + f"; validation {VALIDATION_STREAM} round 2: " + ", ".join(f"from {s} {v:.4f}" for s, v in chosen.items())
          + f"; rounds from {best}: " + ", ".join(f"{r}: {v:.4f}" for r, v in by_round.items()))


if __name__ == "__main__":
    main()
