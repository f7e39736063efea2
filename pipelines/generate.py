"""``freelabel generate``: pseudo-masks for a folder of images from image-level labels, given or selected from a
vocabulary. The output folder is one job (``freelabel.run.folder``: binding, journal, resume, records)."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from freelabel.cards import resolve_preset
from freelabel.clip.config import ClipConfig
from freelabel.config import option
from freelabel.errors import ConfigError, FreelabelError
from freelabel.io.images import MAX_PIXELS
from freelabel.run.engines import EngineConfig, create_engine, engine_option, model_factory
from freelabel.run.folder import check_out_dir
from freelabel.run.masks import FolderOptions, MaskFolder, read_inputs
from freelabel.run.model import labeler_on
from freelabel.run.selection import LABELS, ClassifyConfig, select_folder, selection_inputs, selection_settings


@dataclass
class GenerateConfig:
    """Everything that decides the pseudo-masks; saved in the manifest beside them."""

    clip: ClipConfig = option(default_factory=ClipConfig, help="Which CLIP computes the maps.")
    preset: str | None = option(None, help="Preset JSON (e.g. from `freelabel tune`), or 'default' for the library "
                                "default preset; None = the model's own preset (its model card, freelabel.cards).")
    overrides: dict[str, Any] = option(default_factory=dict, help="Labeler fields set on top of the preset.")
    save_scores: bool = option(False, help="Also write float16 probabilities per image to scores/<image>.npz.")
    overlay: bool = option(False, help="Also write overlays/<image>.png: the mask drawn over the image, with a "
                           "legend of its classes.")
    overwrite: bool = option(False, help="Redo every image, and rebind the folder to new labels or settings; needed "
                             "to reuse a folder with other labels or settings.")
    max_pixels: int | None = option(MAX_PIXELS, help="Larger images are refused unread (decompression bombs); None "
                                    "= no limit.")
    vocabulary: str | None = option(None, flag="--vocab", help="Label-free: each image's labels are selected from "
                                    "this vocabulary (a file with one class per line, synonyms after commas, a "
                                    "classes.txt, or 'a,b,c'; see `freelabel classify`) into OUT/selection/ first; "
                                    "None = labels are given.")
    selection_overrides: dict[str, Any] = option(default_factory=dict, help="SelectionConfig fields over the "
                                                 "preset's.")
    engine: EngineConfig = engine_option()

    def __post_init__(self) -> None:
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ConfigError(f"max_pixels must be at least 1, got {self.max_pixels}")


def generate(images_dir: str | Path, labels_spec: str | None, out: str | Path, config: GenerateConfig | None = None
             ) -> dict:
    """Write one palette PNG per image to ``out`` (same relative path, ``.png``), ``classes.txt`` (the global
    label index: 0 background, then labels in order of first appearance), optional ``scores/*.npz``,
    ``job.json`` (what the folder is bound to), ``journal.jsonl``, ``manifest.json`` (config, preset, final labeler
    settings, model, versions, per-image status) and ``errors.jsonl`` (one object per failed image: path, stage,
    message).

    labels_spec: the images' labels (see ``read_image_labels``); None when ``config.vocabulary`` is given: then
    every image's labels are first selected from it (``select_folder`` into ``out/selection/``, whose
    ``labels.json`` a person can correct and pass as labels) and the manifest lists them with their scores.
    Settings come from the model's preset (or ``config.preset``) with ``config.overrides`` on top. Everything that
    can be checked before the model loads is (settings, label file, image names); a problem with one image (its
    labels, its file) fails that image only. Returns the manifest, whose ``summary`` counts done, skipped and
    failed images.
    """
    config = config or GenerateConfig()
    images_dir, out = Path(images_dir), Path(out)
    if (labels_spec is None) == (config.vocabulary is None):
        raise FreelabelError("give exactly one of --labels (given labels) and --vocab (labels selected from it)")
    preset, labeler_config = resolve_preset(config.clip.model, config.preset, config.overrides)
    check_out_dir(images_dir, out)

    # the one Labeler (and CLIP) of this process, built on first use (after every check), then shared by selection
    # and masks; an engine's workers build their own
    engine = create_engine(config.engine, config.clip.model, config.clip.device)
    labeler = model_factory(functools.partial(labeler_on, config.clip, labeler_config), config.engine,
                            config.clip.device)

    manifest = {"config": asdict(config), "preset": preset.to_dict(), "labeler": labeler_config.to_dict(),
                "images_dir": str(images_dir), "labels": labels_spec}
    if config.vocabulary is not None:
        classify_config = ClassifyConfig(clip=config.clip, preset=config.preset, overrides=config.selection_overrides,
                                         labeler_overrides=config.overrides, overwrite=config.overwrite,
                                         max_pixels=config.max_pixels, engine=config.engine)
        selected = select_folder(images_dir, config.vocabulary, out / "selection", classify_config,
                                 selection_settings(preset, config.selection_overrides), labeler_config,
                                 labeler, engine)["images"]
        labels_spec = str(out / "selection" / LABELS)
        manifest.update(labels=labels_spec, selected={
            name: {label: entry["scores"][label] for label in entry["labels"]}
            for name, entry in selected.items() if entry["status"] == "done"})
        inputs = selection_inputs(images_dir, selected, labels_spec)
    else:
        inputs = read_inputs(images_dir, labels_spec)
    settings = {"model": config.clip.model, "pretrained": config.clip.pretrained, "labeler": labeler_config.to_dict(),
                "save_scores": config.save_scores, "max_pixels": config.max_pixels}
    folder = MaskFolder(images_dir, inputs, out, settings,
                        FolderOptions(config.save_scores, config.overwrite, config.max_pixels, config.overlay))
    manifest["model"] = labeler().clip.pretrained  # loaded here, after the folder's binding is checked
    return folder.run(labeler, manifest, engine)
