"""``freelabel tune``: fit a preset to a few hand-labelled images (see ``freelabel.pseudo.tune``)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from freelabel.clip.config import ClipConfig
from freelabel.clip.loading import load_clip
from freelabel.config import option
from freelabel.errors import ConfigError, FreelabelError
from freelabel.io.files import provenance, read_json, write_json
from freelabel.io.images import list_images, read_image
from freelabel.io.labels import read_classes
from freelabel.io.masks import IGNORE_INDEX, read_mask
from freelabel.pseudo.config import METHODS, LabelerConfig, SelectionConfig
from freelabel.pseudo.labeler import Labeler
from freelabel.cards import Preset, resolve_preset, write_preset
from freelabel.pseudo.select import LabelSelector
from freelabel.pseudo.tune import (LabelledImage, ParallelScorer, fit_selection, model_depth, scores_from_counts,
                                  search_stage, selection_quality, stage_grids)


@dataclass
class TuneConfig:
    """How a preset is fitted. Saved in the preset's ``source``."""

    clip: ClipConfig = option(default_factory=ClipConfig, help="Which CLIP the preset is for.")
    preset: str | None = option(None, help="The starting preset JSON, or 'default'; None = the model's own preset.")
    overrides: dict[str, Any] = option(default_factory=dict, help="Labeler fields set on the starting preset.")
    holdout: float = option(0.3, help="Fraction of the images kept out of the search and used for the report "
                            "(spread evenly).")
    workers: int = option(2, help="Processes scoring image chunks in parallel, each with its own copy of the CLIP.")
    # on the toy validation stream a second round did not help the held-out score (docs/results.md)
    rounds: int = option(1, help="Passes over all stages; a second re-fits maps, fusion and background under the CRF "
                         "the first one chose.")
    methods: tuple[str, ...] | None = option(None, help="The map methods the search tries, e.g. 'naclip,sclip' "
                                             "(the search starts from the first where the starting preset's is not "
                                             "one of them); None = all.")

    def __post_init__(self) -> None:
        if self.methods is not None:
            self.methods = tuple(self.methods)
            unknown = [m for m in self.methods if m not in METHODS]
            if not self.methods or unknown:
                raise ConfigError(f"methods must be one or more of {', '.join(METHODS)}, got "
                                  f"{', '.join(self.methods) or 'none'}")
        if not 0 < self.holdout < 1:
            raise ConfigError(f"holdout must be in (0, 1), got {self.holdout}")
        if self.workers < 1 or self.rounds < 1:
            raise ConfigError(f"workers and rounds must be at least 1, got {self.workers} and {self.rounds}")


def labelled_images(images_dir: Path, masks_dir: Path, classes: list[str]) -> list[tuple[str, LabelledImage]]:
    """Images below ``images_dir`` that have a mask (same relative path, ``.png``) below ``masks_dir``, with the
    classes present in the mask as labels; images with no labelled class are left out. A mask or image that
    cannot be read, a mask of another size than its image or holding a class beyond ``classes`` raises
    ``FreelabelError`` naming it."""
    pairs = []
    for relative in list_images(images_dir):
        mask_path = masks_dir / relative.with_suffix(".png")
        if not mask_path.is_file():
            continue
        mask = read_mask(mask_path)
        image = read_image(images_dir / relative)  # read once here, so that a bad pair is named before the search
        if mask.shape != image.shape[:2]:
            raise FreelabelError(f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image "
                                 f"{images_dir / relative} is {image.shape[1]}x{image.shape[0]}")
        present = sorted(set(mask.ravel().tolist()) - {0, IGNORE_INDEX})
        if present and present[-1] >= len(classes):
            raise FreelabelError(f"{mask_path} holds class {present[-1]}, beyond the {len(classes)} classes given")
        if present:
            pairs.append((str(relative), LabelledImage(images_dir / relative, mask_path,
                                                       tuple(classes[i] for i in present))))
    return pairs


def split(pairs: list, holdout: float) -> tuple[list, list]:
    """(tuning, held-out): every item whose index crosses a multiple of 1/holdout is held out, spread evenly."""
    held = [int((i + 1) * holdout) > int(i * holdout) for i in range(len(pairs))]
    return [p for p, h in zip(pairs, held) if not h], [p for p, h in zip(pairs, held) if h]


def tune(images_dir: str | Path, masks_dir: str | Path, classes_file: str | Path, out: str | Path,
         config: TuneConfig | None = None) -> Preset:
    """Search a preset on the tuning split of the labelled images and write it to ``out`` (JSON), with a report
    on the held-out split (starting vs tuned settings) in its ``source``.

    Resumable: each finished stage is saved to ``<out>.progress.json``; a rerun with the same inputs continues
    after the last finished stage (other inputs are an error until that file is removed). Returns the preset.
    """
    config = config or TuneConfig()
    images_dir, masks_dir, out = Path(images_dir), Path(masks_dir), Path(out)
    start_preset, start = resolve_preset(config.clip.model, config.preset, config.overrides)
    classes = read_classes(classes_file)
    if not classes or classes[0] != "background":
        raise FreelabelError(f"{classes_file}: class 0 must be 'background'")
    pairs = labelled_images(images_dir, masks_dir, classes)
    tuning, heldout = split(pairs, config.holdout)
    if len(tuning) < 2 or not heldout:
        raise FreelabelError(f"found {len(pairs)} images with a mask and a labelled class below {images_dir} and "
                             f"{masks_dir}: {len(tuning)} to tune on and {len(heldout)} held out with --holdout "
                             f"{config.holdout}; at least 2 and 1 are needed (20-50 images is a good number)")
    searched = {key: value for key, value in asdict(config).items() if key != "workers"}  # workers change no result
    fingerprint = hashlib.sha256(json.dumps(
        [searched, start.to_dict(), classes, [name for name, _ in pairs]], sort_keys=True).encode()).hexdigest()
    progress_path = out.with_name(out.name + ".progress.json")
    progress = read_json(progress_path) if progress_path.is_file() else {"fingerprint": fingerprint, "stages": {}}
    if progress.get("fingerprint") != fingerprint:
        raise FreelabelError(f"{progress_path} belongs to a search with other inputs or settings; remove it to "
                             "start over, or rerun with the same ones to resume")
    depth = model_depth(config.clip)
    # stage keys: "maps", "fusion", ... in the first round, "maps@2", ... in the second
    grids = {name if round_ == 1 else f"{name}@{round_}": grid for round_ in range(1, config.rounds + 1)
             for name, grid in stage_grids(depth, config.methods).items()}
    started = time.monotonic()
    tuning_items = [item for _, item in tuning]
    heldout_items = [item for _, item in heldout]
    total = sum(len(tuning_items) for name in grids if name not in progress["stages"]) + 2 * len(heldout_items)
    # the current settings are a candidate of every stage: they must use one of the methods searched
    best = (start if config.methods is None or start.method in config.methods
            else start.with_overrides(method=config.methods[0]))
    with ParallelScorer(config.clip, config.workers) as scorer, \
            tqdm(total=total, desc="tune", unit="image", disable=None) as bar:
        for name, grid in grids.items():
            if name in progress["stages"]:
                best = LabelerConfig.from_dict(progress["stages"][name]["best"])
                continue
            bar.set_postfix_str(f"{name}: {len(grid) + 1} candidates")
            best, rows = search_stage(best, grid, lambda configs: scorer.score(configs, tuning_items, classes,
                                                                              bar.update))
            ranked = sorted(rows, key=lambda row: -row[1]["miou"])
            progress["stages"][name] = {"best": best.to_dict(), "tuning": ranked[0][1], "candidates": len(rows),
                                        "top": [{"settings": o, **s} for o, s in ranked[:5]]}
            write_json(progress_path, progress)
        start_counts, tuned_counts = scorer.score([start, best], heldout_items, classes, bar.update)
    if "selection" not in progress["stages"]:
        progress["stages"]["selection"] = tune_selection(config.clip, start_preset.selection, tuning_items,
                                                         heldout_items, classes[1:])
        write_json(progress_path, progress)
    selection = progress["stages"]["selection"]
    last = progress["stages"][list(grids)[-1]]
    source = {
        "name": out.stem, "command": "freelabel tune", "model": config.clip.model, "pretrained": config.clip.pretrained,
        "data": {"images": str(images_dir), "masks": str(masks_dir), "classes": str(classes_file),
                 "tuning_images": len(tuning), "heldout_images": len(heldout), "holdout": config.holdout},
        "start": start_preset.source.get("name", start_preset.source.get("file")),
        "score": "mIoU of freelabel evaluate (pixels marked ignore count as wrong)",
        "tuning": last["tuning"],
        "heldout": {"start": scores_from_counts(start_counts), "tuned": scores_from_counts(tuned_counts)},
        "stages": {name: stage["tuning"] for name, stage in progress["stages"].items() if name != "selection"},
        "selection": {key: selection[key] for key in ("tuning", "heldout")},
        "seconds": round(time.monotonic() - started, 1), **provenance(),
    }
    data_config = images_dir.parent / "config.json"  # a toy-world folder records the stream it was drawn from
    if data_config.is_file() and "seed" in read_json(data_config):
        source["data"]["seed"] = read_json(data_config)["seed"]
    preset = Preset(best, source, SelectionConfig(**selection["best"]))
    write_preset(out, preset)
    return preset


def tune_selection(clip: ClipConfig, start: SelectionConfig, tuning: list[LabelledImage],
                   heldout: list[LabelledImage], vocabulary: list[str]) -> dict[str, Any]:
    """Fit the label-free selection's ``top_k`` and ``min_score`` to the labelled images (their classes as the
    vocabulary, the labels present in each mask as the truth): chosen on the tuning split, reported on the
    held-out one for the starting and the fitted settings. These choose the candidates; the check against their
    masks that follows (``verify_rounds`` etc.) keeps the starting preset's settings and is not part of the score.
    Returns ``{"best": SelectionConfig fields, "tuning": quality, "heldout": {"start": quality, "tuned":
    quality}}``."""
    selector = LabelSelector(Labeler(load_clip(clip)), start)
    selector.set_vocabulary(vocabulary)

    def classified(items: list[LabelledImage]) -> tuple[list, np.ndarray]:
        views = [selector.view_probabilities(read_image(item.image_path)) for item in items]
        return views, np.array([[name in item.labels for name in vocabulary] for item in items])

    overlap = start.max_overlap
    tuning_views, tuning_targets = classified(tuning)
    top_k, min_score, reached = fit_selection(tuning_views, tuning_targets, overlap)
    heldout_views, heldout_targets = classified(heldout)
    return {"best": replace(start, top_k=top_k, min_score=min_score).to_dict(), "tuning": reached,
            "heldout": {"start": selection_quality(heldout_views, heldout_targets, start.top_k, start.min_score,
                                                   overlap),
                        "tuned": selection_quality(heldout_views, heldout_targets, top_k, min_score, overlap)}}
