"""Training loops: the backbone on images alone, then a ControlNet on image/mask pairs with the backbone frozen."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from diffusers import ControlNetModel, DDPMScheduler
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from dsfed.generation.backbone import Backbone
from dsfed.generation.condition import render_condition
from dsfed.generation.settings import DiffusionTrainSpec
from dsfed.training.loop import autocast

__all__ = ["Noiser", "as_uint8_tensor", "controlnet_forward", "train_backbone", "train_controlnet"]

log = logging.getLogger(__name__)

ArrayLike = Tensor | np.ndarray | Dataset | Sequence[Any]


def as_uint8_tensor(data: ArrayLike, key: str) -> Tensor:
    """(N, C, H, W) uint8 from an array, a tensor, or a dataset whose items are arrays or dicts with ``key``."""
    if isinstance(data, (Tensor, np.ndarray)):
        out = torch.as_tensor(data)
    else:
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        out = torch.stack([torch.as_tensor(item[key] if isinstance(item, dict) else item) for item in items])
    if out.ndim != 4:
        raise ValueError(f"{key}s must be (N, C, H, W), got shape {tuple(out.shape)}")
    if out.dtype == torch.bool:
        out = out.to(torch.uint8)
    if out.dtype != torch.uint8:
        raise ValueError(f"{key}s must be uint8 (images 0-255, masks 0/1), got {out.dtype}")
    return out


class Noiser:
    """Forward diffusion and the training target for the backbone's schedule, on ``device``."""

    def __init__(self, backbone: Backbone, device: torch.device) -> None:
        config = backbone.scheduler_config
        scheduler = DDPMScheduler.from_config(config)
        self.alphas = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        self.steps = int(config["num_train_timesteps"])
        self.prediction = str(config["prediction_type"])

    def __call__(self, x0: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """x0 (B, C, s, s) -> (noisy x_t, timesteps (B,) int64, target (B, C, s, s))."""
        b = x0.shape[0]
        t = torch.randint(0, self.steps, (b,), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        a = self.alphas[t].view(b, 1, 1, 1)
        sa, sn = a.sqrt(), (1.0 - a).sqrt()
        noisy = sa * x0 + sn * noise
        target = noise if self.prediction == "epsilon" else sa * noise - sn * x0
        return noisy, t, target


def _lr_lambda(spec: DiffusionTrainSpec) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        if not spec.cosine_decay:
            return 1.0
        progress = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _run(
    module: nn.Module,
    spec: DiffusionTrainSpec,
    n: int,
    device: torch.device,
    desc: str,
    loss_of: Callable[[Tensor, torch.Generator], Tensor],
    progress: bool,
) -> list[float]:
    """The shared loop: epoch-wise shuffled batches of indices, AdamW, schedule, clipping, EMA, loss history."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(spec))
    ema = [p.detach().clone() for p in params] if spec.ema_decay is not None else None
    index_gen = torch.Generator().manual_seed(spec.seed)
    noise_gen = torch.Generator(device).manual_seed(spec.seed + 1)
    history = torch.empty(spec.steps, device=device)
    order, pos = torch.randperm(n, generator=index_gen), 0
    bar = tqdm(range(spec.steps), desc=desc, unit="step", leave=False, disable=None if progress else True)
    for step in bar:
        if pos + spec.batch_size > n and pos > 0:
            order, pos = torch.randperm(n, generator=index_gen), 0
        idx = order[pos : pos + spec.batch_size]
        if len(idx) < spec.batch_size:  # fewer samples than a batch: draw with replacement
            idx = torch.randint(0, n, (spec.batch_size,), generator=index_gen)
        pos += spec.batch_size
        loss = loss_of(idx.to(device), noise_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if spec.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            decay = min(spec.ema_decay, (1 + step) / (10 + step))  # type: ignore[type-var]
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - decay)
        history[step] = loss.detach()
        if (step + 1) % spec.log_every == 0 or step + 1 == spec.steps:
            recent = history[max(0, step + 1 - spec.log_every) : step + 1].mean().item()
            bar.set_postfix(loss=f"{recent:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            log.debug("%s step %d loss %.5f", desc, step + 1, recent)
    if ema is not None:
        with torch.no_grad():
            for p, e in zip(params, ema, strict=True):
                p.copy_(e)
    return history.tolist()


def _batch_images(data: Tensor, idx: Tensor, backbone: Backbone, flip: Tensor | None = None) -> Tensor:
    """uint8 images ``data[idx]`` (B, 3, H, W) -> model space, flipped (where ``flip``) *before* encoding:
    flipping SD latents is not the same as encoding flipped images."""
    pixels = data[idx]
    if flip is not None:
        pixels = _hflip(pixels, flip)
    return backbone.encode_images(pixels.float() / 127.5 - 1.0)


def _hflip(x: Tensor, flip: Tensor) -> Tensor:
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _prompt_table(backbone: Backbone, prompt_rows: ArrayLike | None, n: int, device: torch.device) -> Tensor | None:
    """The per-sample prompt rows (N,) int64 on ``device`` (None: every sample gets the selected prompt)."""
    if prompt_rows is None:
        return None
    rows = torch.as_tensor(np.asarray(prompt_rows), dtype=torch.int64).to(device)
    if not hasattr(backbone, "encode_prompts"):
        raise ValueError("per-sample prompts need a backbone with learned prompt rows (the embedded one)")
    count = backbone.prompt.shape[0]  # type: ignore[attr-defined]
    if rows.shape != (n,) or (n and (int(rows.min()) < 0 or int(rows.max()) >= count)):
        raise ValueError(f"prompt_rows must be {n} ints in [0, {count}), got shape {tuple(rows.shape)}")
    return rows


def _prompts(backbone: Backbone, table: Tensor | None, idx: Tensor, dropout: float, gen: torch.Generator) -> Tensor:
    """encoder_hidden_states (B, L, D) for the batch ``idx``: each sample's task prompt, replaced by the
    generic row 0 with probability ``dropout``; the selected prompt when there is no table."""
    if table is None:
        return backbone.encode_prompt(len(idx))
    rows = table[idx]
    rows = torch.where(torch.rand(len(idx), device=rows.device, generator=gen) < dropout, torch.zeros_like(rows), rows)
    return backbone.encode_prompts(rows)  # type: ignore[attr-defined, no-any-return]


def train_backbone(
    backbone: Backbone,
    images: ArrayLike,
    spec: DiffusionTrainSpec,
    device: str | torch.device = "cpu",
    progress: bool = True,
    prompt_rows: ArrayLike | None = None,
) -> list[float]:
    """Train the whole backbone (UNet and prompt embeddings) to predict the noise (or v) of noised images.

    Args:
        images: (N, 3, H, W) uint8 (array, tensor, or a dataset of such items / of dicts with "image");
            resized to the backbone's sample size if needed. Moved to ``device`` once.
        prompt_rows: (N,) each image's prompt row (its task; multi-task pre-training), dropped to the
            generic row 0 with probability ``spec.prompt_dropout``; None: the selected prompt for all.
        spec: steps, batch size, optimiser, bf16 autocast (``amp``), EMA (the final weights are the EMA
            weights), horizontal flips, seed (batches, noise and timesteps all follow it).

    Returns:
        the loss of every step (MSE against the schedule's target), len == spec.steps.
    """
    device = torch.device(device)
    data = as_uint8_tensor(images, "image").to(device)
    module = backbone if isinstance(backbone, nn.Module) else backbone.unet
    module.to(device).train()
    module.requires_grad_(True)
    if spec.grad_checkpointing:
        backbone.unet.enable_gradient_checkpointing()
    noiser = Noiser(backbone, device)
    table = _prompt_table(backbone, prompt_rows, len(data), device)

    def loss_of(idx: Tensor, gen: torch.Generator) -> Tensor:
        flip = torch.rand(len(idx), device=device, generator=gen) < 0.5 if spec.hflip else None
        x0 = _batch_images(data, idx, backbone, flip)
        noisy, t, target = noiser(x0, gen)
        prompt = _prompts(backbone, table, idx, spec.prompt_dropout, gen)
        with autocast(device, spec.amp):
            pred = backbone.unet(noisy, t, encoder_hidden_states=prompt).sample
        return F.mse_loss(pred.float(), target)

    try:
        return _run(module, spec, len(data), device, "backbone", loss_of, progress)
    finally:
        if spec.grad_checkpointing:
            backbone.unet.disable_gradient_checkpointing()
        module.eval()


def controlnet_forward(
    backbone: Backbone, controlnet: ControlNetModel, noisy: Tensor, t: Tensor, cond: Tensor, prompt: Tensor
) -> Tensor:
    """The backbone's prediction for ``noisy`` (B, C, s, s) at ``t`` with the ControlNet's residuals for
    the condition images ``cond`` (B, 3, c, c) added."""
    down, mid = controlnet(noisy, t, encoder_hidden_states=prompt, controlnet_cond=cond, return_dict=False)
    return backbone.unet(
        noisy, t, encoder_hidden_states=prompt, down_block_additional_residuals=down, mid_block_additional_residual=mid
    ).sample


def train_controlnet(
    backbone: Backbone,
    controlnet: ControlNetModel,
    images: ArrayLike,
    masks: ArrayLike | None,
    spec: DiffusionTrainSpec,
    device: str | torch.device = "cpu",
    progress: bool = True,
    prompt_rows: ArrayLike | None = None,
    conditions: Tensor | None = None,
) -> list[float]:
    """Train only ``controlnet`` (the backbone stays frozen and unchanged) on image/mask pairs.

    Args:
        images: (N, 3, H, W) uint8, or a dataset of dicts with "image" and "mask" (then ``masks`` is None);
            brought to model space by ``backbone.encode_images`` (resized to the condition size, and
            VAE-encoded behind Stable Diffusion).
        masks: (N, K, Hm, Wm) {0, 1}, rendered by :func:`render_condition` at the backbone's
            condition size. With probability ``spec.condition_dropout`` a sample's condition image is
            zeroed (classifier-free guidance).
        prompt_rows: as in :func:`train_backbone` (the frozen prompt rows of each sample's task).
        conditions: (N, 3, c, c) float condition images already rendered (tasks with different class
            counts in one corpus); then ``masks`` is not read.

    Returns:
        the loss of every step, len == spec.steps.
    """
    device = torch.device(device)
    data = as_uint8_tensor(images, "image").to(device)
    size = backbone.condition_size
    if conditions is not None:
        rendered = conditions.to(device=device, dtype=torch.float32)
        if rendered.shape != (len(data), 3, size, size):
            raise ValueError(f"conditions must be ({len(data)}, 3, {size}, {size}), got {tuple(rendered.shape)}")
    else:
        labels = as_uint8_tensor(images if masks is None else masks, "mask").to(device)
        if len(labels) != len(data):
            raise ValueError(f"{len(data)} images but {len(labels)} masks")
    frozen = backbone if isinstance(backbone, nn.Module) else backbone.unet
    was_trainable = [p.requires_grad for p in frozen.parameters()]
    frozen.to(device).eval()
    frozen.requires_grad_(False)
    controlnet.to(device).train()
    controlnet.requires_grad_(True)
    if spec.grad_checkpointing:
        controlnet.enable_gradient_checkpointing()
        backbone.unet.enable_gradient_checkpointing()
    noiser = Noiser(backbone, device)
    table = _prompt_table(backbone, prompt_rows, len(data), device)

    def loss_of(idx: Tensor, gen: torch.Generator) -> Tensor:
        cond = rendered[idx] if conditions is not None else render_condition(labels[idx], size)
        b = len(idx)
        flip = torch.rand(b, device=device, generator=gen) < 0.5 if spec.hflip else None
        x0 = _batch_images(data, idx, backbone, flip)
        if flip is not None:
            cond = _hflip(cond, flip)
        keep = torch.rand(b, device=device, generator=gen) >= spec.condition_dropout
        cond = cond * keep.view(b, 1, 1, 1)
        noisy, t, target = noiser(x0, gen)
        prompt = _prompts(backbone, table, idx, spec.prompt_dropout, gen).detach()
        with autocast(device, spec.amp):
            pred = controlnet_forward(backbone, controlnet, noisy, t, cond, prompt)
        return F.mse_loss(pred.float(), target)

    try:
        return _run(controlnet, spec, len(data), device, "controlnet", loss_of, progress)
    finally:
        if spec.grad_checkpointing:
            controlnet.disable_gradient_checkpointing()
            backbone.unet.disable_gradient_checkpointing()
        controlnet.eval()
        for p, trainable in zip(frozen.parameters(), was_trainable, strict=True):
            p.requires_grad_(trainable)
