"""Per-image Dice, IoU and HD95 (MONAI) of a segmenter on a store split, and their summaries."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dsfed.models import Segmenter
from dsfed.models.prompts import boxes_from_masks

__all__ = ["evaluate", "per_image_metrics", "summarise"]


def per_image_metrics(logits: Tensor, masks: Tensor, hd95: bool = False) -> dict[str, Tensor]:
    """Metrics per image and class.

    Args:
        logits: (B, C, H, W); a pixel is predicted foreground where sigmoid > 0.5 (logit > 0).
        masks: (B, C, H, W) {0, 1}.
        hd95: also the 95th-percentile Hausdorff distance in pixels (slower; NaN where a mask or
            prediction is empty).

    Returns:
        ``{"dice": (B, C), "iou": (B, C)[, "hd95": (B, C)]}``; an empty mask predicted empty scores 1.
    """
    pred = (logits.float() > 0).float()
    target = masks.float()
    out = {
        "dice": compute_dice(pred, target, include_background=True, ignore_empty=False),
        "iou": compute_iou(pred, target, include_background=True, ignore_empty=False),
    }
    if hd95:
        with warnings.catch_warnings():  # empty masks give NaN by design; MONAI warns per class
            warnings.simplefilter("ignore")
            out["hd95"] = compute_hausdorff_distance(pred, target, include_background=True, percentile=95)
    return out


@torch.no_grad()
def evaluate(model: Segmenter, dataset: Dataset, batch_size: int = 8, hd95: bool = False) -> dict[str, np.ndarray]:
    """Run ``model`` over ``dataset`` (items ``{"image", "mask"}``): per-image metrics as (N, C) arrays.

    Box-prompted models get the tight box around each ground-truth mask (the usual MedSAM protocol).
    """
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list[Tensor]] = {}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        boxes = boxes_from_masks(batch["mask"], jitter=0.0).to(device) if model.prompt == "box" else None
        logits = model(batch["image"].to(device), boxes)
        for name, value in per_image_metrics(logits.cpu(), batch["mask"], hd95).items():
            parts.setdefault(name, []).append(value)
    return {name: torch.cat(values).numpy() for name, values in parts.items()}


def summarise(metrics: dict[str, np.ndarray], classes: Sequence[str]) -> dict[str, float]:
    """Means per class and over classes: ``dice_<class>``, ``dice`` (mean of classes), ``iou_...``; NaN-aware."""
    out: dict[str, float] = {}
    for name, values in metrics.items():
        with warnings.catch_warnings():  # all-NaN columns (e.g. HD95 of always-empty classes) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            per_class = np.nanmean(values, axis=0) if len(values) else np.full(len(classes), math.nan)
            overall = float(np.nanmean(per_class))
        for cls, value in zip(classes, per_class):
            out[f"{name}_{cls}"] = float(value)
        out[name] = overall
    return out
