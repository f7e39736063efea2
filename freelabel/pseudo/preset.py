"""Presets: a full ``LabelerConfig`` (CRF included) plus where it came from (data, seed, score).

Every model has one. A model may ship its own file in ``freelabel/pseudo/presets/<model>.json`` (the toy CLIP
does, written by ``freelabel tune``); every other model gets the library's default preset, the field defaults of
``LabelerConfig`` and ``CrfConfig``. ``freelabel tune`` writes a preset for a user's own data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from freelabel.errors import ConfigError
from freelabel.io.files import read_json, write_json
from freelabel.pseudo.config import LabelerConfig, SelectionConfig

PRESET_DIR = Path(__file__).parent / "presets"
DEFAULT_SOURCE = {
    "name": "default",
    "data": "the field defaults of LabelerConfig; the CRF chosen on COCO-Object val with majority-class 1/16 cells "
            "(benchmarks/crf_coco.py --tune --coarse majority), not verified on real CLIP maps",
}


@dataclass
class Preset:
    """A labeler configuration and its provenance."""

    labeler: LabelerConfig  # every setting of the maps, fusion, background, CRF and ignore
    source: dict[str, Any] = field(default_factory=dict)  # where it came from: name, data, seed, score, command
    selection: SelectionConfig = field(default_factory=SelectionConfig)  # label-free: choosing labels from a vocabulary

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"labeler": {...}, "selection": {...}, "source": {...}}``."""
        return {"labeler": self.labeler.to_dict(), "selection": self.selection.to_dict(), "source": dict(self.source)}


def read_preset(path: str | Path) -> Preset:
    """Read a preset JSON file; a malformed one raises ``ConfigError`` naming the file."""
    content = read_json(path)
    if not isinstance(content, dict) or not isinstance(content.get("labeler"), dict):
        raise ConfigError(f"{path} is not a freelabel preset (expected {{\"labeler\": {{...}}, \"source\": {{...}}}})")
    try:
        labeler = LabelerConfig.from_dict(content["labeler"])
        selection = SelectionConfig(**content.get("selection", {}))
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{path}: {error}") from None
    source = content.get("source") if isinstance(content.get("source"), dict) else {}
    return Preset(labeler, {"file": str(path), **source}, selection)


def write_preset(path: str | Path, preset: Preset) -> None:
    """Write a preset as JSON, atomically."""
    write_json(path, preset.to_dict())


def default_preset() -> Preset:
    """The library's default preset, for models that ship none."""
    return Preset(LabelerConfig(), dict(DEFAULT_SOURCE))


def model_preset(model: str) -> Preset:
    """The preset of ``model`` (an open_clip name such as ``freelabel-toy`` or ``ViT-B-16``): its own file if the
    package ships one, else the default preset."""
    path = PRESET_DIR / f"{model}.json"
    if path.is_file():
        preset = read_preset(path)
        return dataclasses.replace(preset, source={"name": model, **preset.source, "file": f"package:{path.name}"})
    return default_preset()


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
