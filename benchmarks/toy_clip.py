"""How well the toy CLIP knows the toy world, on scenes never used for training or validation.

Zero-shot top-1 over all toy classes on single-object scenes (stream 1000), per attribute, and the mean
average precision of label scores on multi-object scenes (stream 1001, 2-4 objects). Prints the training
curve recorded beside the weights, then one summary line.

    .venv/bin/python benchmarks/toy_clip.py [--pretrained PATH] [--n 500]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from freelabel.cards import BUNDLED
from freelabel.clip.loading import TOY_MODEL, load_clip
from freelabel.toy.evaluate import multi_label_map, zero_shot_report
from freelabel.toy.world import ToyWorldConfig, scenes

SINGLE_OBJECT_STREAM, MULTI_OBJECT_STREAM = 1000, 1001


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default=None, help="weights file (default: the bundled toy weights)")
    parser.add_argument("--n", type=int, default=500, help="scenes per measurement")
    args = parser.parse_args()
    torch.set_num_threads(2)
    weights = Path(args.pretrained) if args.pretrained else BUNDLED[TOY_MODEL][1]
    clip = load_clip(TOY_MODEL, str(weights), offline=True)
    started = time.monotonic()
    single = list(scenes(SINGLE_OBJECT_STREAM, args.n, n_objects=1))
    multi = list(scenes(MULTI_OBJECT_STREAM, args.n, ToyWorldConfig(min_objects=2)))
    report = zero_shot_report(clip, single)
    mean_ap = multi_label_map(clip, multi)
    curve_path = weights.with_name(weights.stem + "-curve.json")
    if curve_path.is_file():
        record = json.loads(curve_path.read_text())
        print(f"training: {record['steps']} steps, {record['train_seconds'] / 60:.1f} min training + "
              f"{record['render_seconds'] / 60:.1f} min rendering the pool")
        print("validation curve (stream 1, 300 single-object scenes): minutes top1 colour shape texture")
        for point in record["curve"]:
            print(f"  {point['minutes']:6.2f} {point['top1']:.3f} {point['colour']:.3f} {point['shape']:.3f} "
                  f"{point['texture']:.3f}")
    size_mb = weights.stat().st_size / 1e6
    print(f"toy_clip: top1={report['top1']:.3f} colour={report['colour']:.3f} shape={report['shape']:.3f} "
          f"texture={report['texture']:.3f} (n={args.n} single-object) multi-object mAP={mean_ap:.3f} "
          f"(n={args.n}, 2-4 objects) weights={size_mb:.1f}MB eval={time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
