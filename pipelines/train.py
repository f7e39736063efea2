"""``freelabel train``: a segmenter trained on a ``generate`` output folder, by default on the CLIP that made it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from freelabel.clip.config import ClipConfig
from freelabel.io.files import read_json
from freelabel.segmenter.rounds import train_rounds
from freelabel.segmenter.trainer import TrainConfig, train_config


def pseudo_masks_clip(pseudo_dir: str | Path) -> dict[str, Any]:
    """The CLIP (``model`` and ``pretrained``) a ``generate`` folder's manifest names; {} when it names none."""
    manifest = Path(pseudo_dir) / "manifest.json"
    content = read_json(manifest) if manifest.is_file() else {}
    config = content.get("config") if isinstance(content, dict) else None  # a malformed one is refused by train
    clip = config.get("clip") if isinstance(config, dict) else None
    return {key: clip[key] for key in ("model", "pretrained") if key in clip} if isinstance(clip, dict) else {}


def train_run(pseudo_dir: str | Path, out: str | Path, clip_options: dict[str, Any] | None = None,
              **overrides: Any) -> tuple[TrainConfig, dict[str, Any]]:
    """Train on ``pseudo_dir`` into ``out``. clip_options: ClipConfig fields given by the user (model, pretrained,
    device, cache_dir, offline); without a model, the backbone is the CLIP that made the pseudo-masks (or the
    library default). overrides: TrainConfig fields over the model's training preset (``rounds`` among them).
    Returns the config and the last metrics line."""
    clip_options = dict(clip_options or {})
    if "model" not in clip_options:
        clip_options = {**pseudo_masks_clip(pseudo_dir), **clip_options}
    config = train_config(dataclasses.replace(ClipConfig(), **clip_options), **overrides)
    return config, train_rounds(pseudo_dir, out, config)
