"""freelabel: segmentation labels from image-level labels with CLIP, without anyone drawing a mask."""

from freelabel.cards import ModelCard, Preset, list_models, model_card, model_preset, read_preset, write_preset
from freelabel.clip.loading import ClipConfig, LoadedClip, load_clip
from freelabel.errors import FreelabelError
from freelabel.exchange import LabelFolder, read_label_folder
from freelabel.pseudo.config import LabelerConfig, SelectionConfig
from freelabel.pseudo.crf import CrfConfig
from freelabel.pseudo.labeler import Labeler
from freelabel.pseudo.pamr import PamrConfig
from freelabel.pseudo.select import LabelSelector
from freelabel.review import ReviewConfig, write_review
from freelabel.run.engines import EngineConfig, create_engine
from freelabel.run.query import QueryResult, query
from freelabel.segmentation import ImageSegmenter, Segmentation
from freelabel.segmenter.config import SegmenterConfig
from freelabel.segmenter.factory import architecture_config, create_segmenter, list_architectures
from freelabel.segmenter.modeling import SelectedLabelSegmenter
from freelabel.segmenter.predictor import Segmenter
from freelabel.segmenter.rounds import train_rounds
from freelabel.segmenter.trainer import TrainConfig, train, train_config
from freelabel.version import __version__

__all__ = ["ClipConfig", "CrfConfig", "EngineConfig", "FreelabelError", "ImageSegmenter", "LabelFolder",
           "LabelSelector", "Labeler", "LabelerConfig", "LoadedClip", "ModelCard", "PamrConfig", "Preset",
           "QueryResult", "ReviewConfig", "SegmenterConfig", "Segmentation", "Segmenter", "SelectedLabelSegmenter",
           "SelectionConfig", "TrainConfig", "__version__", "architecture_config", "create_engine",
           "create_segmenter", "list_architectures", "list_models", "load_clip", "model_card", "model_preset",
           "query", "read_label_folder", "read_preset", "train", "train_config", "train_rounds", "write_preset",
           "write_review"]
