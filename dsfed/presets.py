"""Named configurations, one switch away: ``dsfed preset NAME`` writes one into ``params.yaml``.

A preset is a builder (name -> function of the local paths it needs) returning a whole params dict, so
the result validates like any hand-written file. ``paper-fundus`` is DSFedMed's fundus setting: SAM
ViT-B and TinySAM at 1024 px with 256 px masks, Stable Diffusion 1.5 + a mask ControlNet, 100 FedAvg
rounds x 1 local epoch (Adam 1e-4, BCE pos_weight 2), distillation batch 4 and lam 0.5, on the four
FedDG fundus domains with one held out. One deviation: the weights travel through the payload codec
(``federated.codec``: fp16 down, bf16 deltas up, zstd), about a third of the paper's traffic.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PRESETS", "PresetPaths", "build_preset"]


@dataclass(frozen=True)
class PresetPaths:
    """Local files a real configuration points at (nothing is downloaded)."""

    data: Path                      # the dataset root (paper-fundus: the FedDG fundus folder with Domain1..4)
    sam: Path                       # sam_vit_b_01ec64.pth
    tinysam: Path                   # tinysam.pth (TinySAM's release)
    sd15: Path                      # a diffusers Stable Diffusion 1.5 folder
    controlnet: Path | None = None  # optional: a diffusers ControlNet folder to start from (e.g. sd-controlnet-seg)
    domains: tuple[str, ...] = ("Domain1", "Domain2", "Domain3", "Domain4")
    holdout: str | None = "Domain4"


def paper_fundus(paths: PresetPaths) -> dict[str, Any]:
    """DSFedMed on FedDG fundus (optic disc + cup): the paper's models, sizes and schedule."""
    sam = {"model": "sam_vit_b", "checkpoint": str(paths.sam), "strategy": "fedavg"}
    return {
        "seed": 0,
        "data": {"classes": ["optic_disc", "optic_cup"], "image_size": 1024, "mask_size": 256, "resize": "stretch",
                 "holdout": paths.holdout.lower() if paths.holdout else None},
        "prepare": {"split": {"val": 0.15, "test": 0.2}, "compression": {"codec": "zstd", "level": 5}},
        "federated": {
            "rounds": 100, "device": "cuda", "fraction": 1.0, "min_clients": 2,
            "pretrained_dir": os.path.commonpath([str(paths.sam.parent), str(paths.tinysam.parent)]),
            "local": {"epochs": 1, "batch_size": 4, "lr": 1.0e-4, "amp": True},
            "loss": {"name": "bce_dice", "pos_weight": 2.0, "dice": 0.0},
            "augment": {"enabled": True},
            # ours, not the paper's: fp16 downloads, bf16 update deltas, zstd (the paper's fp32 both ways: 8,920 MB per
            # client; this: ~2,900-3,600 MB at a demo Dice within 0.001, docs/benchmarks/codec-cpu.json)
            "codec": {"down": "fp16", "up": "bf16", "delta": True, "compress": "zstd"},
            "methods": {
                "fedtinysam": {"model": "tinysam", "checkpoint": str(paths.tinysam), "strategy": "fedavg"},
                "fedsam": sam,
                "fedmsa": {**sam, "adapter": "msa"},
                "fedunet": {"model": "unet", "input_size": 256},
                "fedunet_lite0": {"model": "unet_lite0", "input_size": 256},
                "fednnunet": {"model": "nnunet", "input_size": 256},
                "centralized": {**sam, "strategy": "centralized"},
            },
        },
        "backbone": {"kind": "sd15", "path": str(paths.sd15), "controlnet": str(paths.controlnet) if paths.controlnet else None,
                     "prompt": "a retinal fundus photograph", "device": "cuda"},
        "controlnet": {"steps": 5000, "batch_size": 4, "lr": 1.0e-5, "warmup_steps": 100, "amp": True,
                       "grad_checkpointing": True, "device": "cuda"},
        "synthesize": {"n": 500, "val": 0.15, "batch_size": 8, "sampler": {"sampler": "unipc", "steps": 20, "guidance_scale": 7.5},
                       "device": "cuda"},
        "quality": {"segmenter": {"model": "unet", "input_size": 256, "epochs": 20}, "device": "cuda"},
        "server_sam": {"model": "sam_vit_b", "checkpoint": str(paths.sam), "epochs": 10, "batch_size": 4, "lr": 1.0e-4,
                       "loss": {"name": "bce_dice", "pos_weight": 2.0, "dice": 0.0}, "amp": True, "device": "cuda"},
        # freeze_sam_encoder as the released code does (SAM's embeddings cached: 4 MB a pair in RAM, ~5 GB for 1,275 pairs)
        "distill": {"student": "fedtinysam", "rounds": 100, "lam": 0.5, "rate": 0.5, "selection": "pool", "batch_size": 4,
                    "lr_sam": 1.0e-4, "lr_tiny": 1.0e-4, "freeze_sam_encoder": True, "device": "cuda"},
        "evaluate": {"device": "cuda"},
        "clients": {
            domain.lower(): {"source": {"kind": "feddg", "path": str(paths.data), "domain": domain}} for domain in paths.domains
        },
    }


PRESETS: dict[str, Callable[[PresetPaths], dict[str, Any]]] = {"paper-fundus": paper_fundus}


def build_preset(name: str, paths: PresetPaths) -> dict[str, Any]:
    """The params dict of preset ``name``."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    return PRESETS[name](paths)
