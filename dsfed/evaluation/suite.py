"""Scoring for the ``evaluate`` stage (:mod:`dsfed.stages.evaluate`): a model on test splits, with intervals and costs.

Each client's test split is scored per image (Dice, IoU, HD95; MONAI); a summary gives mean, std and a
percentile bootstrap interval of the per-image Dice (``scipy.stats.bootstrap``); ``flops_per_image`` counts a
batch-1 forward pass's floating-point operations (the same number on every machine: the hashed cost) and
``inference_ms`` measures its time (a measurement of this machine, kept out of hashed outputs).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import bootstrap

from dsfed.config import Params
from dsfed.data.dataset import StoreDataset
from dsfed.data.store import ClientStore
from dsfed.evaluation.metrics import per_image_metrics
from dsfed.models import Segmenter
from dsfed.models.prompts import boxes_from_masks

__all__ = ["bootstrap_ci", "clean_floats", "flops_per_image", "inference_ms", "load_test_sets", "score_client", "score_on_tests", "source_mean",
           "summarise_client"]

log = logging.getLogger(__name__)

def bootstrap_ci(values: np.ndarray, n_resamples: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped); (nan, nan) when fewer than 2."""
    values = values[np.isfinite(values)]
    if len(values) < 2 or n_resamples == 0:
        return (math.nan, math.nan)
    if np.ptp(values) == 0:
        return (float(values[0]), float(values[0]))
    res = bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=level, method="percentile",
                    random_state=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def _boxes(model: Segmenter, masks: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """A box-prompted model's prompts: the tight box of each ground-truth mask (as MedSAM is evaluated); else None."""
    if model.prompt != "box":
        return None
    if masks is None:
        raise ValueError("a box-prompted model needs the masks its boxes come from")
    return boxes_from_masks(masks, jitter=0.0).to(device)


@torch.no_grad()
def _predict(model: Segmenter, images: torch.Tensor, device: torch.device, masks: torch.Tensor | None = None, batch: int = 16) -> torch.Tensor:
    """Logits (N, C, Sm, Sm) of ``images`` (N, 3, S, S); box prompts from ``masks`` (N, C, Sm, Sm) when the model takes them."""
    out = []
    for i in range(0, len(images), batch):
        boxes = _boxes(model, masks[i : i + batch] if masks is not None else None, device)
        out.append(model(images[i : i + batch].to(device), boxes).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def flops_per_image(model: Segmenter, images: torch.Tensor, masks: torch.Tensor | None = None) -> float:
    """Floating-point operations of one batch-1 forward pass on ``images[:1]`` (N, 3, S, S) (box prompts from
    ``masks``), counted by ``torch.utils.flop_counter`` (matrix products, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    # the counter's module tracker hooks every output that requires grad, and a parameter passed through as an
    # output (SAM's prompt encoder's) has no grad function to hook: count with gradients switched off
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        with counter:
            model(images[:1].to(device), _boxes(model, masks[:1] if masks is not None else None, device))
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return float(counter.get_total_flops())


@torch.no_grad()
def inference_ms(model: Segmenter, images: torch.Tensor, device: torch.device, warmup: int = 2, masks: torch.Tensor | None = None) -> float:
    """Median wall time of a batch-1 forward pass over ``images`` (N, 3, S, S) float, in ms (box prompts from ``masks``)."""
    def forward(i: int) -> None:
        model(images[i : i + 1].to(device), _boxes(model, masks[i : i + 1] if masks is not None else None, device))

    for i in range(min(warmup, len(images))):
        forward(i)
    times = []
    for i in range(len(images)):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        forward(i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def load_test_sets(stores: dict[str, Path]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each client store's test split: images (N, 3, S, S) float [0, 1], masks (N, C, Sm, Sm) float {0, 1}."""
    tests = {}
    for name, path in stores.items():
        ds = StoreDataset(ClientStore(path), "test")
        items = [ds[i] for i in range(len(ds))]
        tests[name] = (torch.stack([it["image"] for it in items]), torch.stack([it["mask"] for it in items]))
    return tests


def score_client(model: Segmenter, images: torch.Tensor, masks: torch.Tensor, params: Params,
                 device: torch.device) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """Per-image metrics (each (N, C)) and logits (N, C, Sm, Sm) of ``model`` on one client's test images (N, 3, S, S)."""
    logits = _predict(model, images, device, masks)
    return {k: v.numpy() for k, v in per_image_metrics(logits, masks, hd95=params.evaluate.hd95).items()}, logits


def summarise_client(metrics: dict[str, np.ndarray], params: Params) -> dict[str, Any]:
    """One client's summary (means, per-class means, std, bootstrap CI of Dice) from its per-image metrics."""
    return _summary(metrics, list(params.data.classes), params.evaluate, params.seed)


def score_on_tests(model: Segmenter, tests: dict[str, tuple[torch.Tensor, torch.Tensor]], params: Params,
                   device: torch.device) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]], dict[str, torch.Tensor]]:
    """(summary per client, per-image metrics per client, logits per client) of ``model`` on ``tests``."""
    summaries, per_image, logits_by = {}, {}, {}
    for client, (images, masks) in tests.items():
        metrics, logits = score_client(model, images, masks, params, device)
        summaries[client] = summarise_client(metrics, params)
        per_image[client], logits_by[client] = metrics, logits
    return summaries, per_image, logits_by


def source_mean(per_client: dict[str, Any], source: list[str]) -> dict[str, float]:
    """Mean over the source clients of their per-client means (Dice, IoU, HD95)."""
    src = [per_client[c] for c in source if c in per_client]
    with warnings.catch_warnings():  # HD95 is NaN where every mask or prediction is empty
        warnings.simplefilter("ignore", RuntimeWarning)
        return {k: float(np.nanmean([s[k] for s in src])) for k in ("dice", "iou", "hd95") if src and k in src[0]}


def _summary(per_image: dict[str, np.ndarray], classes: list[str], cfg: Any, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": int(len(per_image["dice"]))}
    for name, values in per_image.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            image_mean = np.nanmean(values, axis=1)  # mean over classes per image
            out[name] = float(np.nanmean(image_mean)) if len(values) else math.nan
            out[f"{name}_std"] = float(np.nanstd(image_mean)) if len(values) else math.nan
            for k, cls in enumerate(classes):
                out[f"{name}_{cls}"] = float(np.nanmean(values[:, k])) if len(values) else math.nan
        if name == "dice":
            out["dice_ci"] = list(bootstrap_ci(image_mean, cfg.bootstrap, cfg.ci, seed))
    return out


def clean_floats(value: Any) -> Any:
    """``value`` with every float rounded to 5 digits and non-finite floats as None (for JSON metrics)."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 5)
    if isinstance(value, dict):
        return {k: clean_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_floats(v) for v in value]
    return value
