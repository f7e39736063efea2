"""``freelabel predict``: masks from a trained segmenter, in ``generate``'s output format (same manifest, journal,
resume and error rules), so ``freelabel evaluate`` and later tools read them unchanged."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

from freelabel.config import option
from freelabel.errors import ConfigError, FreelabelError
from freelabel.io.images import MAX_PIXELS
from freelabel.io.labels import LabelError, check_label, read_label_vocabulary
from freelabel.io.masks import IGNORE_INDEX
from freelabel.run.engines import EngineConfig, create_engine, engine_option, model_factory
from freelabel.run.folder import image_names
from freelabel.run.masks import FolderOptions, Inputs, MaskFolder, read_inputs
from freelabel.segmenter.checkpoint import MODEL, file_digest, final_round, read_run
from freelabel.segmenter.predictor import Segmenter, run_device


@dataclass
class PredictConfig:
    """Everything that decides a prediction besides the run; saved in the manifest beside the masks."""

    device: str | None = option(None, help="Torch device; None = the run's if available, else cpu.")
    top_k: int | None = option(None, help="Labels competing per image at most; None = the model's.")
    vocab: str | None = option(None, help="More labels to select from (file or 'a,b'), after the training "
                               "vocabulary.")
    save_scores: bool = option(False, help="Also write float16 probabilities per image to scores/<image>.npz.")
    overlay: bool = option(False, help="Also write overlays/<image>.png: the mask drawn over the image, with a "
                           "legend of its classes.")
    overwrite: bool = option(False, help="Redo every image, and rebind the folder to new settings; needed to reuse "
                             "a folder.")
    max_pixels: int | None = option(MAX_PIXELS, help="Larger images are refused unread (decompression bombs); None "
                                    "= no limit.")
    round: int | None = option(None, help="The self-training round whose segmenter predicts (1 = the first); None "
                               "= the run's last finished round.")
    engine: EngineConfig = engine_option()

    def __post_init__(self) -> None:
        if self.round is not None and self.round < 1:
            raise ConfigError(f"round must be at least 1, got {self.round}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {self.top_k}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ConfigError(f"max_pixels must be at least 1, got {self.max_pixels}")


def _vocabulary_inputs(images_dir: Path, vocabulary: list[str]) -> Inputs:
    """Every image gets no labels (the segmenter selects among ``vocabulary``); the class index is background plus
    the vocabulary."""
    names = image_names(images_dir)
    if len(vocabulary) >= IGNORE_INDEX:
        raise FreelabelError(f"{len(vocabulary)} labels do not fit 8-bit masks (at most {IGNORE_INDEX - 1})")
    return Inputs({name: () for name in names}, {}, [], ["background", *vocabulary])


def predict(run_dir: str | Path, images_dir: str | Path, out: str | Path, labels_spec: str | None = None,
            config: PredictConfig | None = None) -> dict:
    """Segment every image below ``images_dir`` with the segmenter of ``run_dir`` into ``out``.

    labels_spec: image-level labels as ``generate`` takes them (any names, also ones never trained on): only they
    and background compete. None: the segmenter selects labels from its training vocabulary (plus
    ``config.vocab``); the class index is then background plus that vocabulary. Returns the manifest.
    """
    config = config or PredictConfig()
    images_dir, out = Path(images_dir), Path(out)
    run_dir = final_round(run_dir, config.round)
    run = read_run(run_dir)
    extra = read_label_vocabulary(config.vocab) if config.vocab else []
    try:
        extra = [check_label(label) for label in extra]
    except LabelError as error:
        raise FreelabelError(f"{config.vocab}: {error}") from None
    vocabulary = list(dict.fromkeys([*run["vocabulary"], *extra]))
    inputs = (read_inputs(images_dir, labels_spec) if labels_spec is not None
              else _vocabulary_inputs(images_dir, vocabulary))
    digest = file_digest(run_dir / MODEL)
    settings = {"run": str(run_dir.resolve()), "model_sha256": digest, "top_k": config.top_k,
                "vocabulary": None if labels_spec is not None else vocabulary, "save_scores": config.save_scores,
                "max_pixels": config.max_pixels}
    folder = MaskFolder(images_dir, inputs, out, settings,
                        FolderOptions(config.save_scores, config.overwrite, config.max_pixels, config.overlay))
    manifest = {"config": asdict(config), "run": str(run_dir), "model_sha256": digest, "clip": run["clip"],
                "architecture": run["architecture"], "images_dir": str(images_dir), "labels": labels_spec}
    device = run_device(run, config.device)
    engine = create_engine(config.engine, run["clip"]["model"], device)
    # round_number=1: run_dir is already the round's own folder
    return folder.run(model_factory(functools.partial(Segmenter.from_run, run_dir, vocabulary=extra,
                                                      top_k=config.top_k, round_number=1), config.engine, device),
                      manifest, engine)

