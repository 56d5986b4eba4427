"""What a hospital receives: segmenting new images with a model the pipeline produced (``dsfed predict``)."""
