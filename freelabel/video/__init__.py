"""Video: classical optical flow (``flow``) and key-frame probabilities carried to the frames between
(``propagate``)."""
