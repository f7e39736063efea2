"""Which model segments the images of a command that takes either: a trained segmenter, or the pseudo-mask
``Labeler``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from freelabel.clip.config import ClipConfig
from freelabel.pseudo.config import LabelerConfig
from freelabel.segmentation import ImageSegmenter

if TYPE_CHECKING:
    from freelabel.pseudo.labeler import Labeler


def load_image_segmenter(checkpoint: str | Path | None, clip: ClipConfig, labeler: LabelerConfig | None
                         ) -> ImageSegmenter:
    """The segmenter trained in ``checkpoint`` (a ``freelabel train`` run folder) on ``clip.device``; without one,
    the ``Labeler`` with the settings ``labeler`` on the CLIP ``clip`` describes."""
    # imported here, with the model: a command that may load none (``video --key-masks``) skips open_clip's import
    from freelabel.pseudo.labeler import Labeler
    from freelabel.segmenter.predictor import Segmenter

    if checkpoint:
        return Segmenter.from_run(checkpoint, clip.device)
    return Labeler(clip_config=clip, config=labeler)


def labeler_on(clip: ClipConfig, config: LabelerConfig | None, device: str) -> Labeler:
    """The ``Labeler`` with the settings ``config`` on the CLIP ``clip`` describes, on ``device`` (which replaces
    ``clip.device``: the engines' model factories pass the device last, see ``freelabel.run.engines.model_factory``)."""
    from freelabel.pseudo.labeler import Labeler

    return Labeler(clip_config=dataclasses.replace(clip, device=device), config=config)
