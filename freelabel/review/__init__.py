"""A static page for looking at a folder of masks: overlays worst first, per-class summary, full views."""

from freelabel.review.page import ReviewConfig, review_data, write_review

__all__ = ["ReviewConfig", "review_data", "write_review"]
