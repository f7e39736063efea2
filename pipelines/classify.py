"""``freelabel classify``: image-level labels for a folder of images, selected from an open vocabulary, written to
``labels.json`` for a person to correct and pass to ``freelabel generate --labels`` (see ``freelabel.run.selection``).
"""

from __future__ import annotations

import functools
from pathlib import Path

from freelabel.run.engines import create_engine, model_factory
from freelabel.run.model import labeler_on
from freelabel.run.selection import ClassifyConfig, select_folder


def classify_folder(images_dir: str | Path, vocabulary_spec: str, out: str | Path,
                    config: ClassifyConfig | None = None) -> dict:
    """Select every image's labels below ``images_dir`` from the vocabulary ``vocabulary_spec`` (a file with one
    class per line, synonyms after commas; a ``classes.txt``; or ``"a,b,c"``) into ``out`` (``select_folder``), with
    the model preset's selection and labeler settings and ``config``'s overrides on top; the settings, vocabulary
    and image list are checked before the model loads. Returns the manifest with every image's entry under
    ``images``; its ``summary`` counts done, skipped and failed images."""
    config = config or ClassifyConfig()
    selection, labeler_config = config.settings()

    engine = create_engine(config.engine, config.clip.model, config.clip.device)
    return select_folder(Path(images_dir), vocabulary_spec, Path(out), config, selection, labeler_config,
                         model_factory(functools.partial(labeler_on, config.clip, labeler_config), config.engine,
                                       config.clip.device), engine)
