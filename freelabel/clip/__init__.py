"""CLIP through open_clip: which model (``config``), loading it (``loading``, behind the checkpoint guards of
``checkpoint``), its dense per-patch features (``dense``), label texts (``text``) and image-level zero-shot scores
(``classify``)."""
