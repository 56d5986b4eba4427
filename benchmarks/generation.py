"""Benchmark: ControlNet training steps/s and sampling images/s, embedded backbone or Stable Diffusion 1.5.

Prints one JSON object. Examples::

    python benchmarks/generation.py                                   # embedded default (64 px) on the CPU
    python benchmarks/generation.py --config sd15 --device cuda --amp # SD 1.5 at 512 px: official configs,
                                                                      # random weights (timing only)
    python benchmarks/generation.py --config sd15 --sd15-path /models/stable-diffusion-v1-5 --device cuda

The embedded configuration loads the shipped weights (data/pretrained/embedded). Training images and masks
are public phantoms; the timed steps follow warm-up steps that are not timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsfed.generation.backbone import Backbone, EmbeddedBackbone
from dsfed.generation.controlnet import build_controlnet, load_controlnet
from dsfed.generation.corpus import public_corpus
from dsfed.generation.sample import sample
from dsfed.generation.settings import DiffusionTrainSpec, SamplerSpec
from dsfed.generation.train import train_controlnet

REPO = Path(__file__).resolve().parents[1]
RELEASE = REPO / "data/pretrained/embedded"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def sd15_random(device: torch.device, dtype: torch.dtype) -> Backbone:
    """Stable Diffusion 1.5's UNet and VAE with their official configs and random weights (timing only)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from dsfed.generation.stable_diffusion import StableDiffusionBackbone

    unet = UNet2DConditionModel(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                                block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                        block_out_channels=(128, 256, 512, 512),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    schedule = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
    backbone = StableDiffusionBackbone(unet, vae, torch.zeros(1, 77, 768), schedule, source="sd15 (official configs, random weights)")
    return backbone.to(device, dtype)


def build(config: str, sd15_path: str | None, device: torch.device, dtype: torch.dtype) -> tuple[Backbone, Any, str]:
    if config == "embedded":
        backbone = EmbeddedBackbone.load(RELEASE / "backbone").to(device)
        return backbone, load_controlnet(backbone, RELEASE / "controlnet.safetensors"), "shipped weights"
    if sd15_path:
        from dsfed.generation.stable_diffusion import StableDiffusionBackbone

        backbone = StableDiffusionBackbone.from_pretrained(sd15_path, device=device)
        return backbone, build_controlnet(backbone), f"local SD 1.5 at {sd15_path}"
    backbone = sd15_random(device, dtype)
    return backbone, build_controlnet(backbone), "official configs, random weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["embedded", "sd15"], default="embedded")
    parser.add_argument("--sd15-path", default=None, help="a local SD 1.5 diffusers folder (default: random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast for training and sampling")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--batch", type=int, default=8, help="ControlNet training batch")
    parser.add_argument("--train-steps", type=int, default=10, help="timed training steps (after 2 warm-up steps)")
    parser.add_argument("--sample-n", type=int, default=16)
    parser.add_argument("--sample-batch", type=int, default=16)
    parser.add_argument("--sample-steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backbone, controlnet, weights = build(args.config, args.sd15_path, device, torch.float32)
    size = backbone.condition_size
    n_data = max(args.batch * 2, args.sample_n)
    images, masks = public_corpus(n_data, size, seed=1, progress=False)

    spec = DiffusionTrainSpec(steps=2, batch_size=args.batch, lr=1e-5, warmup_steps=0, ema_decay=None, amp=args.amp,
                              grad_checkpointing=args.grad_checkpointing, log_every=1)
    train_controlnet(backbone, controlnet, images, masks, spec, device, progress=False)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    train_controlnet(backbone, controlnet, images, masks, spec.model_copy(update={"steps": args.train_steps}), device, progress=False)
    _sync(device)
    train_s = time.perf_counter() - t0
    train_peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None

    sampler = SamplerSpec(steps=args.sample_steps, guidance_scale=args.guidance, amp=args.amp)
    sample(backbone, controlnet, masks[: min(2, args.sample_n)], sampler.model_copy(update={"steps": 2}), device=device, progress=False)
    _sync(device)
    t0 = time.perf_counter()
    out = sample(backbone, controlnet, masks[: args.sample_n], sampler, batch_size=args.sample_batch, device=device, progress=False)
    _sync(device)
    sample_s = time.perf_counter() - t0
    assert out.shape == (args.sample_n, 3, size, size) and np.isfinite(out).all()

    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    result = {
        "benchmark": "generation",
        "config": args.config,
        "weights": weights,
        "image_size": size,
        "model_space": [backbone.in_channels, backbone.sample_size, backbone.sample_size],
        "parameters": {"unet": count(backbone.unet), "controlnet": count(controlnet)},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "amp": args.amp,
        "controlnet_training": {
            "batch": args.batch, "steps": args.train_steps, "grad_checkpointing": args.grad_checkpointing,
            "s_per_step": round(train_s / args.train_steps, 4), "steps_per_s": round(args.train_steps / train_s, 3),
            "images_per_s": round(args.train_steps * args.batch / train_s, 2),
            "peak_gib": None if train_peak is None else round(train_peak, 2),
        },
        "sampling": {
            "sampler": "ddim", "steps": args.sample_steps, "guidance": args.guidance, "n": args.sample_n,
            "batch": args.sample_batch, "seconds": round(sample_s, 2), "images_per_s": round(args.sample_n / sample_s, 3),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
