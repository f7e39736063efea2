"""Labels to and from the tools people correct and train with: COCO JSON (RLE), Label Studio brush tasks, CVAT's
Segmentation Mask 1.1 and Hugging Face image folders."""

from freelabel.exchange.coco import export_coco, import_coco
from freelabel.exchange.cvat import export_cvat, import_cvat
from freelabel.exchange.folder import LabelFolder, LabelledImage, read_label_folder, write_label_folder
from freelabel.exchange.hf import export_hf
from freelabel.exchange.labelstudio import decode_brush, encode_brush, export_labelstudio, import_labelstudio

EXPORT_FORMATS = ("coco", "labelstudio", "cvat", "hf")
IMPORT_FORMATS = ("coco", "labelstudio", "cvat")

__all__ = ["EXPORT_FORMATS", "IMPORT_FORMATS", "LabelFolder", "LabelledImage", "decode_brush", "encode_brush",
           "export_coco", "export_cvat", "export_hf", "export_labelstudio", "import_coco", "import_cvat",
           "import_labelstudio", "read_label_folder", "write_label_folder"]
