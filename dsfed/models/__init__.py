"""Segmentation models behind one interface: images (B,3,S,S) in [0,1] -> logits (B,C,Sm,Sm).

``build_model(name, num_classes, output_size, ...)`` builds any registered model: ``sam_vit_b``,
``sam_vit_l``, ``sam_vit_h``, ``sam_demo``, ``tinysam``, ``tinysam_demo``, ``unet``, ``nnunet``, ``unet_lite0``.

The names below load on first use (PEP 562), so ``dsfed.models.names`` (which config validation reads)
imports without torch, MONAI and segment-anything: about 6 s saved in every stage that needs no model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsfed.models.registry import MODELS, ModelOptions, build_model, model_names
    from dsfed.models.segmenter import Segmenter

__all__ = ["MODELS", "ModelOptions", "Segmenter", "build_model", "model_names"]

_WHERE = {"MODELS": "registry", "ModelOptions": "registry", "build_model": "registry", "model_names": "registry",
          "Segmenter": "segmenter"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"dsfed.models.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'dsfed.models' has no attribute {name!r}")
