"""Loading CLIP models through open_clip (``loading``, behind the checkpoint guards of ``checkpoint``), their
dense per-patch features (``dense``) and image-level zero-shot scores (``classify``)."""

from freelabel.clip.checkpoint import CorruptCheckpointError, IncompatibleWeightsError, UnsafeCheckpointError
from freelabel.clip.loading import (RANDOM_INIT, TOY_MODEL, ClipConfig, ClipSource, LoadedClip, UnknownModelError,
                                    WeightsNotFoundError, load_clip, resolve_source)

__all__ = ["RANDOM_INIT", "TOY_MODEL", "ClipConfig", "ClipSource", "CorruptCheckpointError", "IncompatibleWeightsError",
           "LoadedClip", "UnknownModelError", "UnsafeCheckpointError", "WeightsNotFoundError", "load_clip",
           "resolve_source"]
