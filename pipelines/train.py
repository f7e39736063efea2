"""``freelabel train``: a segmenter trained on a ``generate`` output folder, by default on the CLIP that made it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from freelabel.clip.loading import ClipConfig
from freelabel.io.files import read_json
from freelabel.segmenter.trainer import TrainConfig, train, train_config


def pseudo_masks_clip(pseudo_dir: str | Path) -> ClipConfig | None:
    """The CLIP (model and weights) a ``generate`` folder's manifest names, or None when it names none."""
    manifest = Path(pseudo_dir) / "manifest.json"
    clip = read_json(manifest).get("config", {}).get("clip") if manifest.is_file() else None
    return ClipConfig(**clip) if isinstance(clip, dict) else None


def train_run(pseudo_dir: str | Path, out: str | Path, clip: ClipConfig | None = None,
              clip_options: dict[str, Any] | None = None, **overrides: Any) -> tuple[TrainConfig, dict[str, Any]]:
    """Train on ``pseudo_dir`` into ``out``. clip: the backbone; None = the CLIP that made the pseudo-masks (or the
    library default), with ``clip_options`` (device, cache, offline) on top. overrides: TrainConfig fields over
    the model's training preset. Returns the config and the last metrics line."""
    clip = clip or pseudo_masks_clip(pseudo_dir) or ClipConfig()
    clip = dataclasses.replace(clip, **(clip_options or {}))
    config = train_config(clip, **overrides)
    return config, train(pseudo_dir, out, config)
