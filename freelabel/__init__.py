"""freelabel: segmentation labels from image-level labels with CLIP, without anyone drawing a mask."""

__version__ = "0.1.0"

from freelabel.clip.loading import ClipConfig, LoadedClip, load_clip  # noqa: E402
from freelabel.errors import FreelabelError  # noqa: E402
from freelabel.pseudo.config import LabelerConfig  # noqa: E402
from freelabel.pseudo.crf import CrfConfig  # noqa: E402
from freelabel.pseudo.labeler import Labeler, Segmentation  # noqa: E402
from freelabel.pseudo.preset import Preset, model_preset, read_preset, write_preset  # noqa: E402
from freelabel.pseudo.select import LabelSelector, SelectionConfig  # noqa: E402
from freelabel.run.query import QueryResult, query  # noqa: E402
from freelabel.segmenter.config import SegmenterConfig  # noqa: E402
from freelabel.segmenter.factory import architecture_config, create_segmenter, list_architectures  # noqa: E402
from freelabel.segmenter.modeling import SelectedLabelSegmenter  # noqa: E402
from freelabel.segmenter.predictor import Segmenter  # noqa: E402
from freelabel.segmenter.trainer import TrainConfig, train, train_config  # noqa: E402

__all__ = ["ClipConfig", "CrfConfig", "FreelabelError", "LabelSelector", "Labeler", "LabelerConfig", "LoadedClip",
           "Preset", "QueryResult", "SegmenterConfig", "Segmentation", "Segmenter", "SelectedLabelSegmenter",
           "SelectionConfig", "TrainConfig", "__version__", "architecture_config", "create_segmenter",
           "list_architectures", "load_clip", "model_preset", "query", "read_preset", "train", "train_config",
           "write_preset"]
