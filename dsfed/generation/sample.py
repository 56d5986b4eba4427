"""Sampling images from masks: DDIM or UniPC with classifier-free guidance against a zeroed condition."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers import ControlNetModel, DDIMScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor
from tqdm.auto import tqdm

from dsfed.generation.backbone import Backbone
from dsfed.generation.condition import render_condition
from dsfed.generation.settings import SamplerSpec
from dsfed.generation.train import controlnet_forward
from dsfed.training.loop import autocast

__all__ = ["SAMPLERS", "make_sampler", "sample"]

log = logging.getLogger(__name__)


def _ddim(config: dict[str, Any], pixel_space: bool = True) -> SchedulerMixin:
    # pixel space: clip every x0 estimate to [-1, 1]; latents (SD) are not bounded, so no clipping there
    return DDIMScheduler.from_config(
        config, clip_sample=pixel_space, set_alpha_to_one=True, timestep_spacing="trailing"
    )


def _unipc(config: dict[str, Any], pixel_space: bool = True) -> SchedulerMixin:
    # pixel space: dynamic thresholding keeps every x0 estimate in [-1, 1] (UniPC has no clip_sample); not on latents
    return UniPCMultistepScheduler.from_config(
        config, thresholding=pixel_space, sample_max_value=1.0, timestep_spacing="trailing"
    )


SAMPLERS: dict[str, Callable[[dict[str, Any], bool], SchedulerMixin]] = {"ddim": _ddim, "unipc": _unipc}


def make_sampler(name: str, scheduler_config: dict[str, Any], pixel_space: bool = True) -> SchedulerMixin:
    """A fresh sampler scheduler ``name`` (a key of :data:`SAMPLERS`) on the backbone's noise schedule;
    ``pixel_space`` (the backbone's) turns on clipping / thresholding of the x0 estimates to [-1, 1]."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    config = {k: v for k, v in scheduler_config.items() if k not in ("clip_sample", "clip_sample_range")}
    return SAMPLERS[name](config, pixel_space)


@torch.no_grad()
def sample(
    backbone: Backbone,
    controlnet: ControlNetModel | None,
    masks: Tensor | np.ndarray,
    spec: SamplerSpec,
    seed: int = 0,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Generate one image per mask.

    Args:
        controlnet: None samples the backbone alone (unconditional; masks then only give N).
        masks: (N, K, H, W) {0, 1}, rendered with :func:`render_condition`.
        spec: sampler (ddim | unipc), steps, guidance scale (1 = no guidance, 0 = unconditional),
            DDIM eta, bf16 autocast.
        seed: the starting noise of all N samples is drawn at once on the CPU from ``seed``, so sample i
            does not depend on ``batch_size`` or the device (DDIM eta > 0 draws more noise per batch).

    Returns:
        (N, 3, C, C) uint8 images decoded at the backbone's condition size C (its sample size in pixel
        space, 8x the latent side behind SD's VAE).
    """
    device = torch.device(device)
    masks_t = torch.as_tensor(np.asarray(masks) if not isinstance(masks, Tensor) else masks)
    n = masks_t.shape[0]
    shape = (backbone.in_channels, backbone.sample_size, backbone.sample_size)
    cpu_gen = torch.Generator().manual_seed(seed)
    start = torch.randn((n, *shape), generator=cpu_gen)
    step_gen = torch.Generator(device).manual_seed(seed + 1)
    nets = [backbone] if isinstance(backbone, torch.nn.Module) else [backbone.unet]
    if controlnet is not None:
        nets.append(controlnet)
    for net in nets:
        net.to(device).eval()
    guided = controlnet is not None and spec.guidance_scale != 1.0
    out = []
    batches = range(0, n, batch_size)
    bar = tqdm(total=len(batches) * spec.steps, desc=f"sample ({spec.sampler})", unit="step", leave=False, disable=None if progress else True)
    for lo in batches:
        x = start[lo : lo + batch_size].to(device)
        b = len(x)
        cond = render_condition(masks_t[lo : lo + batch_size].to(device), backbone.condition_size) if controlnet is not None else None
        if guided and cond is not None:
            cond = torch.cat([cond, torch.zeros_like(cond)])
        prompt = backbone.encode_prompt(2 * b if guided else b)
        scheduler = make_sampler(spec.sampler, backbone.scheduler_config, backbone.pixel_space)
        scheduler.set_timesteps(spec.steps, device=device)
        x = x * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            inp = torch.cat([x, x]) if guided else x
            inp = scheduler.scale_model_input(inp, t)
            tt = t.expand(len(inp))
            with autocast(device, spec.amp):
                if controlnet is None:
                    pred = backbone.unet(inp, tt, encoder_hidden_states=prompt).sample
                else:
                    assert cond is not None  # rendered above whenever there is a ControlNet
                    pred = controlnet_forward(backbone, controlnet, inp, tt, cond, prompt)
            pred = pred.float()
            if guided:
                c, u = pred.chunk(2)
                pred = u + spec.guidance_scale * (c - u)
            kwargs = {"eta": spec.eta, "generator": step_gen} if spec.sampler == "ddim" else {}
            x = scheduler.step(pred, t, x, **kwargs).prev_sample
            bar.update(1)
        images = backbone.decode_samples(x)
        out.append(((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu())
    bar.close()
    side = backbone.condition_size
    return torch.cat(out).numpy() if out else np.zeros((0, 3, side, side), dtype=np.uint8)
