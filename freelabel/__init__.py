"""freelabel: segmentation labels from image-level labels with CLIP, without anyone drawing a mask.

The public API below is imported on first use (PEP 562), so that a command that needs no CLIP (``freelabel video
--key-masks``, ``evaluate``, ``export``) does not pay for importing open_clip and torchvision at start-up."""

from __future__ import annotations

import importlib
from typing import Any

from freelabel.version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "ModelCard": "freelabel.cards",
    "Preset": "freelabel.cards",
    "list_models": "freelabel.cards",
    "model_card": "freelabel.cards",
    "model_preset": "freelabel.cards",
    "read_preset": "freelabel.cards",
    "write_preset": "freelabel.cards",
    "ClipConfig": "freelabel.clip.config",
    "LoadedClip": "freelabel.clip.loading",
    "load_clip": "freelabel.clip.loading",
    "FreelabelError": "freelabel.errors",
    "LabelFolder": "freelabel.exchange",
    "read_label_folder": "freelabel.exchange",
    "LabelerConfig": "freelabel.pseudo.config",
    "SelectionConfig": "freelabel.pseudo.config",
    "CrfConfig": "freelabel.pseudo.config",
    "Labeler": "freelabel.pseudo.labeler",
    "PamrConfig": "freelabel.pseudo.config",
    "LabelSelector": "freelabel.pseudo.select",
    "ReviewConfig": "freelabel.review",
    "write_review": "freelabel.review",
    "EngineConfig": "freelabel.run.engines",
    "create_engine": "freelabel.run.engines",
    "QueryResult": "freelabel.run.query",
    "query": "freelabel.run.query",
    "ImageSegmenter": "freelabel.segmentation",
    "Segmentation": "freelabel.segmentation",
    "SegmenterConfig": "freelabel.segmenter.config",
    "architecture_config": "freelabel.segmenter.factory",
    "create_segmenter": "freelabel.segmenter.factory",
    "list_architectures": "freelabel.segmenter.factory",
    "SelectedLabelSegmenter": "freelabel.segmenter.modeling",
    "Segmenter": "freelabel.segmenter.predictor",
    "train_rounds": "freelabel.segmenter.rounds",
    "TrainConfig": "freelabel.segmenter.trainer",
    "train": "freelabel.segmenter.trainer",
    "train_config": "freelabel.segmenter.trainer",
}

__all__ = sorted(["__version__", *_EXPORTS])


def __getattr__(name: str) -> Any:
    """Import the module of public name ``name`` on first use and return the name's value."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'freelabel' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
