"""Mask-conditioned diffusion: backbone + ControlNet (diffusers), training, sampling, public pre-training.

Names are imported lazily: ``dsfed.config`` reads ``dsfed.generation.settings`` (pydantic only), and must
not pay for importing diffusers (several seconds) on every ``dsfed config validate``. The sampler is
``dsfed.generation.sample.sample`` (a lazy package attribute would be shadowed by its submodule).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "Backbone": "backbone",
    "EmbeddedBackbone": "backbone",
    "build_unet": "backbone",
    "render_condition": "condition",
    "build_controlnet": "controlnet",
    "load_controlnet": "controlnet",
    "save_controlnet": "controlnet",
    "load_official_controlnet": "controlnet",
    "StableDiffusionBackbone": "stable_diffusion",
    "BackboneSpec": "settings",
    "DiffusionTrainSpec": "settings",
    "SamplerSpec": "settings",
    "train_backbone": "train",
    "train_controlnet": "train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dsfed.generation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dsfed.generation.{_EXPORTS[name]}"), name)
