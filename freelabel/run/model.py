"""Which model segments the images of a command that takes either: a trained segmenter, or the pseudo-mask
``Labeler``."""

from __future__ import annotations

from pathlib import Path

from freelabel.clip.config import ClipConfig
from freelabel.pseudo.config import LabelerConfig
from freelabel.segmentation import ImageSegmenter


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
