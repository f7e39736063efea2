"""How much the dense CRF recovers from a ViT-like coarse map on real images (no CLIP weights needed).

On ../shared/datasets/coco-object-val, each image's one-hot ground truth (restricted to the classes present)
is average-pooled to a 1/16-resolution grid, upsampled bilinearly and softened (mixed with the uniform
distribution), as a ViT-B/16's patch output would look. mIoU before and after the CRF; the CRF parameters are
chosen by a small grid search on the even-indexed half of the images and reported on the odd half. Both
backends, with time per image.

    .venv/bin/python benchmarks/crf_coco.py [--no-tune]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from freelabel.crf import CrfConfig, refine
from freelabel.io import IGNORE_INDEX, read_classes, read_image, read_mask
from freelabel.metrics import ConfusionMatrix

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "coco-object-val"
STRIDE, SOFTEN = 16, 0.3


def coarse_probabilities(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The classes present in ``mask`` and a (K, H, W) coarse, soft distribution over them."""
    present = np.array(sorted(set(np.unique(mask).tolist()) - {IGNORE_INDEX}))
    one_hot = torch.from_numpy((mask[None] == present[:, None, None]).astype(np.float32))[None]
    h, w = mask.shape
    grid = F.avg_pool2d(one_hot, STRIDE, ceil_mode=True)
    # the grid covers the image padded to whole cells: upsample to that size and crop, so cells stay aligned
    padded = (grid.shape[-2] * STRIDE, grid.shape[-1] * STRIDE)
    up = F.interpolate(grid, size=padded, mode="bilinear", align_corners=False)[0, :, :h, :w]
    up = up / up.sum(dim=0, keepdim=True).clamp_min(1e-6)
    return present, ((1 - SOFTEN) * up + SOFTEN / len(present)).numpy()


def score(samples, config: CrfConfig | None) -> tuple[float, float]:
    """mIoU over ``samples`` with or without the CRF, and seconds per image."""
    matrix, seconds = ConfusionMatrix(81), 0.0
    for image, mask, present, probabilities in samples:
        started = time.perf_counter()
        if config is not None:
            probabilities = refine(probabilities, image, config)
        seconds += time.perf_counter() - started
        matrix.update(present[probabilities.argmax(axis=0)], mask)
    return matrix.miou(), seconds / len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-tune", action="store_true", help="report the library defaults without a search")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    torch.set_num_threads(1)  # one core, as the exact CRF uses
    assert read_classes(DATA / "classes.txt")[0] == "background"
    samples = []
    for path in sorted((DATA / "images").iterdir()):
        image, mask = read_image(path), read_mask(DATA / "masks" / f"{path.stem}.png")
        samples.append((image, mask, *coarse_probabilities(mask)))
    tune, test = samples[0::2], samples[1::2]
    results = {}
    for backend in ("pydensecrf", "torch"):
        best = CrfConfig(backend=backend)
        if not args.no_tune:
            # a small grid (the exact CRF takes about 1 s an image): gaussian weight, bilateral sxy, srgb, weight
            grid = [(1.0, 50.0, 13.0, 1.0), (1.0, 50.0, 13.0, 2.0), (1.0, 80.0, 13.0, 2.0), (1.0, 50.0, 5.0, 2.0),
                    (0.5, 50.0, 13.0, 3.0), (1.0, 30.0, 13.0, 1.0)]
            scored = []
            for g_compat, b_sxy, srgb, b_compat in grid:
                candidate = dataclasses.replace(best, gaussian_compat=g_compat, bilateral_sxy=b_sxy,
                                                bilateral_srgb=srgb, bilateral_compat=b_compat)
                scored.append((score(tune, candidate)[0], candidate))
            best = max(scored, key=lambda item: item[0])[1]
        before, _ = score(test, None)
        after, seconds = score(test, best)
        results[backend] = (before, after, seconds, best)
        print(f"{backend}: before={before:.4f} after={after:.4f} gain={100 * (after - before):+.1f} points "
              f"{seconds:.2f} s/image; gaussian compat={best.gaussian_compat}, bilateral sxy={best.bilateral_sxy} "
              f"srgb={best.bilateral_srgb} compat={best.bilateral_compat}")
    exact, fast = results["pydensecrf"], results["torch"]
    print(f"crf_coco: n={len(test)} held-out images, coarse-map mIoU={exact[0]:.4f}, pydensecrf={exact[1]:.4f} "
          f"({exact[2]:.2f} s/img), torch={fast[1]:.4f} ({fast[2]:.2f} s/img), "
          f"torch-exact={100 * (fast[1] - exact[1]):+.1f} points")


if __name__ == "__main__":
    main()
