"""Running models over many images: the output folder of a job (``folder``: binding, journal, records, resume,
exit status), the per-image job (``job``), the engine interface (``engine``) and the local engine (``local``), the
folder of masks (``masks``), the label-free selection folder (``selection``), the model choice (``model``) and
free-text queries on one image (``query``)."""
