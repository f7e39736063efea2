"""Writing toy-world datasets to disk, in the same layout as real data, and training the toy CLIP."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from freelabel.io import provenance, write_classes, write_image, write_json, write_mask
from freelabel.toy.train import ToyClipTrainConfig, train_toy_clip
from freelabel.toy.world import BACKGROUND, CLASS_NAMES, ToyWorldConfig, clips, scenes


def _write_index(out: Path, kind: str, seed: int, n: int, config: ToyWorldConfig, labels: dict,
                 extra: dict | None = None) -> None:
    write_classes(out / "classes.txt", [BACKGROUND, *CLASS_NAMES])
    write_json(out / "labels.json", labels)
    for name, content in (extra or {}).items():
        write_json(out / name, content)
    write_json(out / "config.json", {"kind": kind, "seed": seed, "n": n, "world": asdict(config), **provenance()})


def write_toy_scenes(out: str | Path, seed: int, n: int, config: ToyWorldConfig | None = None,
                     n_objects: int | None = None) -> Path:
    """Write scenes ``0..n-1`` of stream ``seed`` to ``out``: ``images/NNNNNN.png``, ``masks/NNNNNN.png``
    (palette PNG, value = class index), ``classes.txt``, ``labels.json`` (image -> labels),
    ``captions.json`` (image -> caption) and ``config.json``. Returns ``out``."""
    config, out = config or ToyWorldConfig(), Path(out)
    labels, captions = {}, {}
    for index, scene in enumerate(tqdm(scenes(seed, n, config, n_objects), total=n, desc="toy scenes")):
        name = f"{index:06d}.png"
        write_image(out / "images" / name, scene.image)
        write_mask(out / "masks" / name, scene.mask)
        labels[name], captions[name] = scene.labels, scene.caption
    _write_index(out, "scenes", seed, n, config, labels, {"captions.json": captions})
    return out


def write_toy_clips(out: str | Path, seed: int, n: int, config: ToyWorldConfig | None = None) -> Path:
    """Write clips ``0..n-1`` of stream ``seed`` to ``out``: ``images/clipNNNN/FFFFF.png``, the same under
    ``masks/``, ``classes.txt``, ``labels.json`` (frame path -> labels visible in it) and ``config.json``."""
    config, out = config or ToyWorldConfig(), Path(out)
    labels = {}
    for index, clip in enumerate(tqdm(clips(seed, n, config), total=n, desc="toy clips")):
        for t, (frame, mask, frame_labels) in enumerate(zip(clip.frames, clip.masks, clip.frame_labels)):
            name = f"clip{index:04d}/{t:05d}.png"
            write_image(out / "images" / name, frame)
            write_mask(out / "masks" / name, mask)
            labels[name] = frame_labels
    _write_index(out, "clips", seed, n, config, labels)
    return out


def train_clip(out: str | Path, config: ToyClipTrainConfig | None = None) -> dict:
    """Train the toy CLIP into ``out`` (see ``freelabel.toy.train.train_toy_clip``); returns its record."""
    return train_toy_clip(out, config)
