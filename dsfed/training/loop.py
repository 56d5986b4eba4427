"""The local training loop: epochs over a DataLoader with optional proximal term and bf16 autocast."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dsfed.errors import TrainingDiverged
from dsfed.models import Segmenter
from dsfed.models.prompts import boxes_from_masks

__all__ = ["autocast", "train_epochs"]


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on CUDA (and on CPU when asked), a no-op otherwise."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def train_epochs(
    model: Segmenter,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    epochs: int = 1,
    extra_loss: Callable[[], Tensor] | None = None,
    amp: bool = False,
    device: torch.device | None = None,
    desc: str = "train",
    box_jitter: float = 0.05,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Train ``model`` for ``epochs`` over ``loader`` batches of ``{"image": (B,3,S,S), "mask": (B,C,Sm,Sm)}``.

    Args:
        extra_loss: added to every batch's loss (e.g. FedProx's proximal term).
        amp: bf16 autocast.
        box_jitter: for box-prompted models, each box side moves by up to this fraction (MedSAM style).
        generator: seeds the box jitter.

    Returns:
        ``{"loss": mean batch loss, "samples": samples seen, "steps": optimiser steps}``.
    """
    device = device or next(model.parameters()).device
    model.train()
    total, seen, steps = 0.0, 0, 0
    for _ in range(epochs):
        for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=None):
            images, masks = batch["image"].to(device), batch["mask"].to(device)
            boxes = boxes_from_masks(masks.cpu(), box_jitter, generator).to(device) if model.prompt == "box" else None
            with autocast(device, amp):
                logits = model(images, boxes)
            loss = loss_fn(logits, masks)
            if extra_loss is not None:
                loss = loss + extra_loss()
            value = float(loss.detach())   # before the step: a NaN never reaches the weights
            if not math.isfinite(value):
                raise TrainingDiverged(f"{desc}: the training loss is {value} at step {steps + 1}: lower the learning rate "
                                       "(or check the data)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += value * len(images)
            seen += len(images)
            steps += 1
    return {"loss": total / max(seen, 1), "samples": float(seen), "steps": float(steps)}


