"""freelabel: segmentation labels from image-level labels with CLIP, without anyone drawing a mask."""

__version__ = "0.1.0"
