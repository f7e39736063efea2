"""The selected-label segmenter trained on pseudo-masks: ``config`` and ``configs/`` (architectures), ``modeling``
(the modules), ``factory`` (building one on a CLIP), ``data`` (a generate folder, augmented), ``trainer`` (its
steps), ``rounds`` (self-training rounds), ``hooks`` (what runs around them), ``losses``, ``validation``,
``checkpoint`` (run folders) and ``predictor`` (the ``Segmenter`` façade)."""
