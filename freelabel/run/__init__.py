"""Running the labeler over many images: the per-image job (``job``) and the local loop over jobs (``local``)."""
