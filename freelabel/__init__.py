"""freelabel: segmentation labels from image-level labels with CLIP, without anyone drawing a mask."""

__version__ = "0.1.0"

from freelabel.clip.loading import ClipConfig, LoadedClip, load_clip  # noqa: E402
from freelabel.errors import FreelabelError  # noqa: E402
from freelabel.pseudo.config import LabelerConfig  # noqa: E402
from freelabel.pseudo.crf import CrfConfig  # noqa: E402
from freelabel.pseudo.labeler import Labeler, Segmentation  # noqa: E402
from freelabel.pseudo.preset import Preset, model_preset, read_preset, write_preset  # noqa: E402

__all__ = ["ClipConfig", "CrfConfig", "FreelabelError", "Labeler", "LabelerConfig", "LoadedClip", "Preset",
           "Segmentation", "__version__", "load_clip", "model_preset", "read_preset", "write_preset"]
