"""Each map method through the product in the toy world: `freelabel generate --model freelabel-toy --preset P_M`,
where P_M is what `freelabel tune --methods M` fits on the validation stream 2001 (the first `--validation-scenes`,
30% of them held out for its report, from the library default preset), refined by the CRF (`--no-pamr --crf`), by
PAMR (`--pamr --no-crf`) and, where it differs from both, as tune left it; scored by `freelabel evaluate` (pixels
marked ignore count as wrong; the dense argmax of the saved scores beside it) on 300 scenes of each held-out stream
3000, 3001, 3002. Every method is tuned and measured with the CRF first, then each with PAMR, then as tuned.

The refinement switched on where tune chose none takes its library default settings; the ignore threshold and
the sharpness are the ones tune fitted under its own choice (the dense argmax does not depend on the threshold).

    .venv/bin/python benchmarks/toy_map_methods.py [--methods surgery,naclip,...] [--work DIR] [--n 300]
                                                   [--validation-scenes 400]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import VALIDATION_SCENES, score, spread, toy_scenes, tune_toy

METHODS = ("surgery", "naclip", "sclip", "clearclip", "relevance")
REFINEMENTS = {"CRF": ["--no-pamr", "--crf"], "PAMR": ["--pamr", "--no-crf"]}


def own_refinement(labeler: dict) -> str:
    """The name of the refinement a tuned preset's labeler settings use: CRF, PAMR, CRF+PAMR or none."""
    return "+".join(name for name in ("CRF", "PAMR") if labeler[name.lower()] is not None) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS), help="map methods to measure")
    parser.add_argument("--n", type=int, default=300, help="test scenes per stream")
    parser.add_argument("--streams", default="3000,3001,3002", help="held-out streams")
    parser.add_argument("--validation-scenes", type=int, default=VALIDATION_SCENES, help="scenes tune sees")
    parser.add_argument("--workers", type=int, default=2, help="processes for tune")
    parser.add_argument("--work", help="working folder (tuned presets, data, outputs are reused from it)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="freelabel-map-methods-"))
    work.mkdir(parents=True, exist_ok=True)
    methods, streams = args.methods.split(","), [int(s) for s in args.streams.split(",")]
    presets, variants = {}, {}
    results: dict[tuple[str, str], list[dict]] = {}
    for refinement in [*REFINEMENTS, None]:  # every method's CRF first (each tuned first), then PAMR, then tune's own
        for method in methods:
            if method not in presets:
                path = work / f"preset-{method}-{args.validation_scenes}.json"
                if not path.is_file():
                    started = time.monotonic()
                    report = tune_toy(work, path, "--methods", method, workers=args.workers,
                                      scenes=args.validation_scenes)
                    print(f"{method}: {report} ({time.monotonic() - started:.0f} s)", flush=True)
                presets[method] = (path, json.loads(path.read_text()))
                own = own_refinement(presets[method][1]["labeler"])
                variants[method] = {**REFINEMENTS, **({} if own in REFINEMENTS else {f"tuned ({own})": []})}
            for name, flags in variants[method].items():
                if (name if name in REFINEMENTS else None) != refinement:
                    continue
                for seed in streams:
                    data = toy_scenes(work, seed, args.n)
                    out = work / f"out-{method}-{args.validation_scenes}-{seed}-{name.split()[0]}"
                    report = score(data, out, ["--preset", str(presets[method][0]), *flags])
                    results.setdefault((method, name), []).append(report)
                    print(f"{method} stream {seed} {name:16s} mIoU={report['miou']:.4f} "
                          f"dense={report['dense_miou']:.4f} ignored={report['ignored_fraction']:.4f}", flush=True)
    summary = []
    for method in methods:
        labeler, source = presets[method][1]["labeler"], presets[method][1]["source"]
        own_setting = {"surgery": ["surgery_blocks"], "naclip": ["gaussian_std"]}.get(method, [])
        chosen = {key: labeler[key] for key in [*own_setting, "feature_surgery", "scales", "fusion",
                                                "background_threshold", "sharpness"]}
        summary.append(f"{method} (tuned: {own_refinement(labeler)}, {chosen}; validation held-out "
                       f"{source['heldout']['tuned']['miou']:.3f}): "
                       + ", ".join(f"{name} {spread([r['miou'] for r in results[method, name]])} "
                                   f"(dense {spread([r['dense_miou'] for r in results[method, name]])})"
                                   for name in variants[method]))
    print(f"toy_map_methods: tuned on {args.validation_scenes} scenes of stream 2001, {args.n} held-out scenes x "
          f"streams {args.streams}, mIoU (ignored=wrong): " + "; ".join(summary))


if __name__ == "__main__":
    main()
