"""Segmentation models behind one interface: images (B,3,S,S) in [0,1] -> logits (B,C,Sm,Sm).

``build_model(name, num_classes, output_size, ...)`` builds any registered model: ``sam_vit_b``,
``sam_vit_l``, ``sam_vit_h``, ``sam_demo``, ``tinysam``, ``tinysam_demo``, ``unet``, ``nnunet``.
"""

from dsfed.models.registry import MODELS, ModelOptions, build_model, model_names
from dsfed.models.segmenter import Segmenter

__all__ = ["MODELS", "ModelOptions", "Segmenter", "build_model", "model_names"]
