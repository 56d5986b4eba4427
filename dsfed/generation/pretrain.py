"""Pre-training the released weights: backbone, then a generic mask ControlNet, on the public phantom corpus."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsfed.generation.backbone import EmbeddedBackbone
from dsfed.generation.condition import render_condition
from dsfed.generation.controlnet import build_controlnet, save_controlnet
from dsfed.generation.corpus import DEFAULT_TABLE, public_corpus
from dsfed.generation.grid import outline, save_grid
from dsfed.generation.sample import sample
from dsfed.generation.settings import BackboneSpec, DiffusionTrainSpec, SamplerSpec
from dsfed.generation.train import train_backbone, train_controlnet
from dsfed.io import atomic_path, write_json
from dsfed.provenance import provenance

__all__ = ["CONTROLNET_WEIGHTS", "disc_offsets", "pretrain", "save_grid"]  # save_grid re-exported

log = logging.getLogger(__name__)

CONTROLNET_WEIGHTS = "controlnet.safetensors"


def disc_offsets(images: np.ndarray, masks: np.ndarray, bright_fraction: float = 0.15) -> np.ndarray:
    """Per image, the distance in px between the optic disc's centre in ``masks`` (channel 0) and the
    centroid of the brightest ``bright_fraction`` of pixels (the phantom disc is the brightest structure).

    Args:
        images: (N, 3, S, S) uint8. masks: (N, K, S, S) {0, 1}.

    Returns:
        (N,) float distances; NaN where a mask has no disc.
    """
    n, _, s, _ = images.shape
    yy, xx = np.mgrid[0:s, 0:s]
    out = np.full(n, np.nan)
    for i in range(n):
        disc = masks[i, 0] > 0
        if not disc.any():
            continue
        lum = images[i].astype(np.float32).mean(0)
        bright = lum >= np.quantile(lum, 1.0 - bright_fraction)
        dy = yy[bright].mean() - yy[disc].mean()
        dx = xx[bright].mean() - xx[disc].mean()
        out[i] = float(np.hypot(dy, dx))
    return out


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pretrain(
    out_dir: str | Path,
    corpus_n: int = 8000,
    backbone_spec: BackboneSpec | None = None,
    backbone_train: DiffusionTrainSpec | None = None,
    controlnet_train: DiffusionTrainSpec | None = None,
    sampler: SamplerSpec | None = None,
    device: str = "cpu",
    corpus_seed: int = 0,
    table: str | Path = DEFAULT_TABLE,
    site: str = "public",
    view: str = "roi",
    workers: int | None = None,
    grid_n: int = 8,
    eval_n: int = 64,
    sample_batch: int = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the public corpus, train the backbone, then a generic ControlNet on it (backbone frozen).

    Writes ``out_dir`` atomically (nothing on failure):
        backbone/backbone.{safetensors,json}, controlnet.safetensors (fp16; provenance in their metadata),
        losses.json (per-step losses of both runs), grid.png (rows: condition images, ControlNet samples,
        samples with the mask outlined, the real phantom for that mask, unconditional backbone samples;
        masks of samples the training never saw), pretrain.json (provenance with the exact call
        arguments, parameter counts, timings, disc-placement check).

    ``workers``: processes rendering the corpus (about 70 ms per 64 px sample); None = all CPUs but one
    when the corpus has 512 samples or more.

    Returns:
        the summary written to pretrain.json.
    """
    backbone_spec = backbone_spec or BackboneSpec()
    backbone_train = backbone_train or DiffusionTrainSpec()
    controlnet_train = controlnet_train or DiffusionTrainSpec(seed=backbone_train.seed + 1)
    sampler = sampler or SamplerSpec()
    params = {
        "corpus_n": corpus_n, "backbone_spec": backbone_spec.model_dump(mode="json"),
        "backbone_train": backbone_train.model_dump(mode="json"), "controlnet_train": controlnet_train.model_dump(mode="json"),
        "sampler": sampler.model_dump(mode="json"), "device": device, "corpus_seed": corpus_seed,
        "table": str(table), "site": site, "view": view, "grid_n": grid_n, "eval_n": eval_n,
    }
    meta = provenance(params)
    timings: dict[str, float] = {}
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass overwrite=True to replace it)")

    if workers is None:
        workers = max(0, (os.cpu_count() or 1) - 1) if corpus_n >= 512 else 0
    t0 = time.perf_counter()
    size = backbone_spec.sample_size
    images, masks = public_corpus(corpus_n + max(grid_n, eval_n), size, corpus_seed, table, site, view, workers=workers, progress=progress)
    train_images, train_masks = images[:corpus_n], masks[:corpus_n]
    held_images, held_masks = images[corpus_n:], masks[corpus_n:]
    timings["corpus_s"] = time.perf_counter() - t0

    torch.manual_seed(backbone_train.seed)
    backbone = EmbeddedBackbone(backbone_spec, meta)
    t0 = time.perf_counter()
    backbone_losses = train_backbone(backbone, train_images, backbone_train, device, progress)
    timings["backbone_s"] = time.perf_counter() - t0

    controlnet = build_controlnet(backbone.unet)
    t0 = time.perf_counter()
    controlnet_losses = train_controlnet(backbone, controlnet, train_images, train_masks, controlnet_train, device, progress)
    timings["controlnet_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    generated = sample(backbone, controlnet, held_masks[:eval_n], sampler, seed=0, batch_size=sample_batch, device=device, progress=progress)
    timings["sample_eval_s"] = time.perf_counter() - t0
    unconditional = sample(backbone, None, held_masks[:grid_n], sampler, seed=1, batch_size=sample_batch, device=device, progress=progress)
    shuffled = np.roll(held_masks[:eval_n], 1, axis=0)
    check = {
        "generated_median_px": float(np.nanmedian(disc_offsets(generated, held_masks[:eval_n]))),
        "real_median_px": float(np.nanmedian(disc_offsets(held_images[:eval_n], held_masks[:eval_n]))),
        "shuffled_masks_median_px": float(np.nanmedian(disc_offsets(generated, shuffled))),
    }
    summary = {
        **meta,
        "parameters": {"backbone": _count(backbone), "controlnet": _count(controlnet)},
        "timings": timings,
        "final_loss": {"backbone": float(np.mean(backbone_losses[-50:])), "controlnet": float(np.mean(controlnet_losses[-50:]))},
        "disc_offset": check,
    }
    backbone.to("cpu")
    controlnet.to("cpu")
    with atomic_path(out_dir, overwrite=overwrite) as tmp:
        backbone.save(tmp / "backbone", meta)
        save_controlnet(controlnet, tmp / CONTROLNET_WEIGHTS, meta)
        write_json(tmp / "losses.json", {"backbone": backbone_losses, "controlnet": controlnet_losses})
        conditions = (render_condition(held_masks[:grid_n], size).numpy() * 255).round().astype(np.uint8)
        outlined = np.stack([outline(g, m) for g, m in zip(generated[:grid_n], held_masks[:grid_n], strict=True)])
        save_grid(tmp / "grid.png", [conditions, generated[:grid_n], outlined, held_images[:grid_n], unconditional])
        summary["bytes"] = {
            "backbone": (tmp / "backbone" / "backbone.safetensors").stat().st_size,
            "controlnet": (tmp / CONTROLNET_WEIGHTS).stat().st_size,
        }
        write_json(tmp / "pretrain.json", summary)
    log.info("pretrained weights in %s: %s", out_dir, summary["disc_offset"])
    return summary
