"""Model cards: everything freelabel knows about a model beyond its open_clip architecture, in one place.

A card holds a model's bundled weights, prompt templates, image preprocessing, labeler preset (with its
label-free selection settings) and training preset. The package ships its cards as JSON in
``freelabel/model_cards/<model>.json``; ``register_card`` adds one made in code (as open_clip's
``add_model_config`` adds an architecture). A model without a card (any open_clip name, hub or folder model)
gets the library's defaults: ``model_card`` returns a plain ``ModelCard`` for it.

Presets: a labeler preset is a full ``LabelerConfig`` (CRF included) and ``SelectionConfig`` plus where they came
from (``source``: data, seed, score); ``freelabel tune`` writes one for a user's own data, read back by
``read_preset`` and chosen by ``resolve_preset``. A training preset is ``TrainConfig`` field values plus their
``source``; ``freelabel.segmenter.trainer.train_config`` applies the model's. Both kinds are sections of a card, read
by the one card reader.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from freelabel.errors import ConfigError
from freelabel.io.files import read_json, write_json
from freelabel.pseudo.config import LabelerConfig, SelectionConfig

PACKAGE_DIR = Path(__file__).parent
CARD_DIR = PACKAGE_DIR / "model_cards"
DEFAULT_SOURCE = {
    "name": "default",
    "data": "the field defaults of LabelerConfig; the CRF chosen on COCO-Object val with majority-class 1/16 cells "
            "(benchmarks/crf_coco.py --tune --coarse majority), not verified on real CLIP maps",
}
# CLIP's prompt ensemble, shortened to the templates that carry most of its gain: the templates of a model without
# its own.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a rendering of a {}.", "graffiti of a {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a pixelated photo of the {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.",
    "a photo of one {}.", "a close-up photo of the {}.", "a photo of a large {}.", "a photo of a small {}.",
    "itap of a {}.", "a photo of the large {}.", "a photo of the small {}.", "art of the {}.", "a {}.",
)


@dataclass
class Preset:
    """A labeler configuration and its provenance."""

    labeler: LabelerConfig  # every setting of the maps, fusion, background, CRF and ignore
    source: dict[str, Any] = field(default_factory=dict)  # where it came from: name, data, seed, score, command
    selection: SelectionConfig = field(default_factory=SelectionConfig)  # label-free: choosing labels from a vocabulary

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"labeler": {...}, "selection": {...}, "source": {...}}``."""
        return {"labeler": self.labeler.to_dict(), "selection": self.selection.to_dict(), "source": dict(self.source)}


def default_preset() -> Preset:
    """The library's default preset, for models that ship none."""
    return Preset(LabelerConfig(), dict(DEFAULT_SOURCE))


@dataclass(frozen=True)
class ModelCard:
    """What freelabel knows about one model beyond its open_clip architecture. The field defaults are the
    library's, which every model without a card gets."""

    name: str  # the model name: an open_clip architecture (registered by freelabel/model_configs for its own)
    description: str = ""  # one line for `freelabel models`
    bundled: tuple[str, Path] | None = None  # (pretrained tag, file) of the weights the package ships: the default
    templates: tuple[str, ...] = DEFAULT_TEMPLATES  # prompt templates, each with one '{}' for the label
    # image preprocessing over the pretrained tag's or open_clip's defaults (open_clip PreprocessCfg keys, e.g.
    # interpolation, resize_mode), for models that no open_clip tag describes; open_clip's model configs cannot
    # hold it (every key there goes to the model's constructor)
    preprocess: Mapping[str, Any] = field(default_factory=dict)
    preset: Preset = field(default_factory=default_preset)  # labeler and selection settings, with their source
    train: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig field values over the library's
    train_source: Mapping[str, Any] = field(default_factory=dict)  # how the training preset was chosen
    # images per model call by device type, the labelling commands' --batch-size default: 1 on CPU, where batching
    # does not pay (benchmarks/batching.py); 8 on CUDA is not measured yet (no GPU here)
    batch_sizes: Mapping[str, int] = field(default_factory=lambda: {"cpu": 1, "cuda": 8})

    def batch_size_on(self, device: str) -> int:
        """The batch size for a model on ``device`` (e.g. ``cpu``, ``cuda:1``): its type's, else 1."""
        return int(self.batch_sizes.get(device.split(":")[0], 1))

    def tags(self) -> list[str]:
        """The pretrained tags ``--pretrained`` takes for this model: the bundled one first, then open_clip's."""
        from open_clip.pretrained import list_pretrained_tags_by_model  # here: reading a card costs no open_clip

        return [*([self.bundled[0]] if self.bundled else []), *list_pretrained_tags_by_model(self.name)]


_CARDS: dict[str, ModelCard] = {}
# Models whose weights ship inside the package: name -> (pretrained tag, file); kept by register_card.
BUNDLED: dict[str, tuple[str, Path]] = {}


def register_card(card: ModelCard) -> None:
    """Add ``card`` to the registry (replacing a card of the same name), as open_clip's ``add_model_config`` adds
    an architecture."""
    _CARDS[card.name] = card
    if card.bundled is not None:
        BUNDLED[card.name] = card.bundled
    else:
        BUNDLED.pop(card.name, None)


def model_card(name: str) -> ModelCard:
    """The card of model ``name`` (an open_clip name such as ``freelabel-toy`` or ``ViT-B-16``, a hub id or a
    folder): its registered card, else one holding the library's defaults."""
    return _CARDS.get(name) or ModelCard(name)


def list_models() -> list[str]:
    """The names of the models that have a card, sorted."""
    return sorted(_CARDS)


def preset_from_dict(content: Any, where: str | Path) -> Preset:
    """A labeler preset from its JSON form (``{"labeler": {...}, "selection": {...}, "source": {...}}``, selection
    and source optional); a malformed one raises ``ConfigError`` naming ``where`` (the file it came from)."""
    if not isinstance(content, dict) or not isinstance(content.get("labeler"), dict):
        raise ConfigError(f"{where} is not a freelabel preset (expected {{\"labeler\": {{...}}, \"source\": {{...}}}})")
    try:
        labeler = LabelerConfig.from_dict(content["labeler"])
        selection = SelectionConfig(**content.get("selection", {}))
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{where}: {error}") from None
    source = content.get("source") if isinstance(content.get("source"), dict) else {}
    return Preset(labeler, dict(source), selection)


def read_preset(path: str | Path) -> Preset:
    """Read a preset JSON file (as ``freelabel tune`` writes it); a malformed one raises ``ConfigError`` naming
    the file. The file's path is added to the source."""
    preset = preset_from_dict(read_json(path), path)
    return dataclasses.replace(preset, source={"file": str(path), **preset.source})


def write_preset(path: str | Path, preset: Preset) -> None:
    """Write a preset as JSON, atomically."""
    write_json(path, preset.to_dict())


def model_preset(model: str) -> Preset:
    """The preset of ``model``: its card's (a copy), else the default preset."""
    return copy.deepcopy(model_card(model).preset)


def resolve_preset(model: str, preset: str | Path | None = None, overrides: dict[str, Any] | None = None
                   ) -> tuple[Preset, LabelerConfig]:
    """The preset in force and the final settings: ``preset`` (a file, or ``"default"`` for the library default
    preset) if given, else ``model``'s own, with ``overrides`` applied field by field (see
    ``LabelerConfig.with_overrides``). Everything is validated here, before any model loads: a bad file or value
    raises ``ConfigError``."""
    if preset is None:
        chosen = model_preset(model)
    elif str(preset) == DEFAULT_SOURCE["name"]:
        chosen = default_preset()
    elif not Path(preset).is_file():
        raise ConfigError(f"preset file {preset} does not exist (or pass '{DEFAULT_SOURCE['name']}' for the "
                          "library default preset)")
    else:
        chosen = read_preset(preset)
    return chosen, chosen.labeler.with_overrides(**(overrides or {}))


def _read_card(path: Path) -> ModelCard:
    """Read a card the package ships: ``freelabel/model_cards/<model>.json`` holds ``description``, ``bundled``
    (``{"tag", "file"}``, the file relative to the package), ``templates``, ``preprocess``, ``preset`` (a labeler
    preset, as ``freelabel tune`` writes it), ``batch_sizes`` (device type -> images per model call) and
    ``training`` (``{"train": {TrainConfig fields}, "source": {...}}``), each optional. A malformed card raises
    ``ConfigError`` naming the file."""
    content = read_json(path)
    if not isinstance(content, dict):
        raise ConfigError(f"{path} is not a model card (expected a JSON object)")
    name = path.stem
    fields: dict[str, Any] = {"description": str(content.get("description", "")),
                              "preprocess": dict(content.get("preprocess", {}))}
    if "bundled" in content:
        bundled = content["bundled"]
        if not isinstance(bundled, dict) or set(bundled) != {"tag", "file"}:
            raise ConfigError(f"{path}: 'bundled' must be {{\"tag\": ..., \"file\": ...}}")
        fields["bundled"] = (bundled["tag"], PACKAGE_DIR / bundled["file"])
    if "templates" in content:
        templates = content["templates"]
        if not templates or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates):
            raise ConfigError(f"{path}: 'templates' must be a list of strings, each with one '{{}}' for the label")
        fields["templates"] = tuple(templates)
    if "preset" in content:
        preset = preset_from_dict(content["preset"], path)
        # the name and file first, as manifests have always recorded a shipped preset's source
        fields["preset"] = dataclasses.replace(
            preset, source={"name": name, "file": f"package:{path.name}", **preset.source})
    if "batch_sizes" in content:
        sizes = content["batch_sizes"]
        if not isinstance(sizes, dict) or not all(isinstance(v, int) and v >= 1 for v in sizes.values()):
            raise ConfigError(f"{path}: 'batch_sizes' must map device types to positive integers")
        fields["batch_sizes"] = dict(sizes)
    if "training" in content:
        training = content["training"]
        if not isinstance(training, dict) or not isinstance(training.get("train"), dict):
            raise ConfigError(f"{path}: 'training' is not a training preset (expected {{\"train\": {{...}}, "
                              f"\"source\": {{...}}}})")
        fields.update(train=dict(training["train"]), train_source=dict(training.get("source", {})))
    return ModelCard(name, **fields)

for _path in sorted(CARD_DIR.glob("*.json")):
    register_card(_read_card(_path))
