"""Reading and writing what freelabel consumes and produces: images, masks, class lists, label files, JSON."""

from freelabel.io.files import atomic_path, provenance, read_json, write_json, write_text
from freelabel.io.images import (IMAGE_SUFFIXES, ImageReadError, check_rgb, list_images, read_ahead, read_image,
                                 write_image)
from freelabel.io.labels import (LabelError, check_label, class_lookup, read_classes, read_image_labels,
                                 read_label_vocabulary, read_vocabulary, write_classes)
from freelabel.io.masks import IGNORE_INDEX, palette, read_mask, write_mask

__all__ = ["IGNORE_INDEX", "IMAGE_SUFFIXES", "ImageReadError", "LabelError", "atomic_path", "check_label", "check_rgb",
           "class_lookup", "list_images", "palette", "read_ahead", "provenance", "read_classes", "read_image",
           "read_image_labels", "read_json", "read_label_vocabulary", "read_mask", "read_vocabulary", "write_classes",
           "write_image", "write_json", "write_mask", "write_text"]
