"""Builds segmenters from named JSON architecture configs, as open_clip builds CLIPs from its model configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from freelabel.clip.dense import DenseClipEncoder, check_supported
from freelabel.clip.loading import LoadedClip
from freelabel.errors import ConfigError
from freelabel.io.files import read_json
from freelabel.segmenter.config import SegmenterConfig
from freelabel.segmenter.modeling import SelectedLabelSegmenter

CONFIG_DIR = Path(__file__).parent / "configs"


def list_architectures() -> list[str]:
    """Names of the shipped architecture configs (``freelabel/segmenter/configs/<name>.json``), sorted."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.json"))


def architecture_config(name: str, **overrides: Any) -> SegmenterConfig:
    """The shipped config ``name`` with ``overrides`` (field -> value) on top; unknown names or fields raise
    ``ConfigError``."""
    path = CONFIG_DIR / f"{name}.json"
    if name not in list_architectures():
        raise ConfigError(f"unknown segmenter architecture {name!r}; choose one of {', '.join(list_architectures())}")
    return SegmenterConfig.from_dict({**read_json(path), **overrides})


def create_segmenter(clip: LoadedClip, config: SegmenterConfig) -> SelectedLabelSegmenter:
    """A segmenter on ``clip``'s image tower (shared, not copied) with freshly initialised head layers, on the
    CLIP's device. ``surgery_blocks`` is capped at the tower's depth."""
    visual = check_supported(clip.model.visual)
    encoder = DenseClipEncoder(visual, min(config.surgery_blocks, len(visual.transformer.resblocks)))
    # label embeddings live in CLIP's joint space, the tower's output width
    return SelectedLabelSegmenter(encoder, visual.output_dim, config).to(clip.device)
