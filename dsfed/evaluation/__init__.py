"""Evaluation: per-image segmentation metrics (MONAI), summaries, efficiency figures."""
