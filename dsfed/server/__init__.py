"""Server-side model work of DSFedMed: the foundation SAM, its fine-tuning on synthetic data (``server_sam``)."""
