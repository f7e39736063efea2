"""Running models over many images: the output folder of a job (``folder``: binding, journal, records, resume,
exit status), the per-image job and its worker (``job``), the engine interface (``engine``), the engines that run
workers (``engines``: ``local`` in this process, ``ray_engine`` on Ray actors), the folder of masks (``masks``),
the label-free selection folder (``selection``), the model choice (``model``) and free-text queries on one image
(``query``)."""
