"""Loading CLIP models through open_clip (``loading``), their dense per-patch features (``dense``) and
image-level zero-shot scores (``classify``)."""

from freelabel.clip.loading import (RANDOM_INIT, TOY_MODEL, ClipConfig, ClipSource, IncompatibleWeightsError,
                                    LoadedClip, UnknownModelError, UnsafeCheckpointError, WeightsNotFoundError,
                                    load_clip, resolve_source)

__all__ = ["RANDOM_INIT", "TOY_MODEL", "ClipConfig", "ClipSource", "IncompatibleWeightsError", "LoadedClip",
           "UnknownModelError", "UnsafeCheckpointError", "WeightsNotFoundError", "load_clip", "resolve_source"]
