"""Mask-conditioned diffusion: backbone + ControlNet (diffusers), training, sampling, public pre-training."""

from __future__ import annotations

from dsfed.generation.backbone import Backbone, EmbeddedBackbone, build_unet
from dsfed.generation.condition import render_condition
from dsfed.generation.controlnet import build_controlnet, load_controlnet, save_controlnet
from dsfed.generation.sample import sample
from dsfed.generation.settings import BackboneSpec, DiffusionTrainSpec, SamplerSpec
from dsfed.generation.train import train_backbone, train_controlnet

__all__ = [
    "Backbone",
    "BackboneSpec",
    "DiffusionTrainSpec",
    "EmbeddedBackbone",
    "SamplerSpec",
    "build_controlnet",
    "build_unet",
    "load_controlnet",
    "render_condition",
    "sample",
    "save_controlnet",
    "train_backbone",
    "train_controlnet",
]
