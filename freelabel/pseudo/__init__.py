"""Pseudo-masks, stage by stage: views -> maps -> fusion -> CRF -> mask; the ``Labeler`` runs them in order."""
