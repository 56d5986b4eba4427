"""Run at the server (the ``synthesize@<client>`` stage): images from one client's uploaded ControlNet + masks.

The server reads only what the client uploaded (``artifacts/generators/<client>/``) and the backbone
manifest; it never opens the client's store. Output: ``artifacts/synthetic/<client>/data.zarr`` in the
client-store schema (role ``synthetic``), with the sampling settings in its attrs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, Rand2DElastic, RandAffine, RandFlip
from torch.nn import functional as F

import dsfed
from dsfed.config import Params
from dsfed.data.splits import stable_seed
from dsfed.data.store import write_store
from dsfed.errors import DsfedError
from dsfed.generation.backbones import check_classes, load_backbone
from dsfed.generation.client import CONTROLNET_FILE, GENERATOR_SUMMARY, read_uploaded_masks
from dsfed.generation.controlnet import load_controlnet
from dsfed.generation.sample import sample
from dsfed.generation.settings import MaskAugmentConfig
from dsfed.io import atomic_path, sha256_file
from dsfed.provenance import SYNTHESIZE_CODE, code_hash
from dsfed.runtime import pick_device

__all__ = ["augment_masks", "synthesize_client", "upscale_images"]

log = logging.getLogger(__name__)


def _mask_transform(cfg: MaskAugmentConfig, seed: int) -> Compose:
    """Flip, affine, elastic on a (K, H, W) float mask; nearest resampling and zero padding keep it binary."""
    transforms = Compose([
        RandFlip(prob=cfg.flip, spatial_axis=1),
        RandAffine(prob=cfg.affine, rotate_range=np.deg2rad(cfg.rotate_deg), scale_range=cfg.scale,
                   mode="nearest", padding_mode="zeros"),
        Rand2DElastic(spacing=cfg.elastic_spacing, magnitude_range=(0.0, cfg.elastic_magnitude), prob=cfg.elastic,
                      mode="nearest", padding_mode="zeros"),
    ])
    transforms.set_random_state(seed=seed)
    return transforms


def augment_masks(masks: np.ndarray, n: int, cfg: MaskAugmentConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` conditioning masks from ``masks`` (M, K, H, W) {0, 1}.

    Mask i is ``masks[i % M]``: as it is during the first pass (i < M), augmented after (when
    ``cfg.enabled``; otherwise masks repeat). Deterministic given ``seed``.

    Returns:
        ((n, K, H, W) uint8, (n,) int64 index of the uploaded mask each one came from).
    """
    m = len(masks)
    if m == 0:
        raise ValueError("no masks to condition on")
    source = np.arange(n, dtype=np.int64) % m
    out = masks[source].astype(np.uint8).copy()
    if cfg.enabled and n > m:
        transform = _mask_transform(cfg, seed)
        for i in range(m, n):
            moved = transform(torch.as_tensor(out[i], dtype=torch.float32))
            out[i] = (torch.as_tensor(np.asarray(moved)) > 0.5).numpy().astype(np.uint8)
    return out, source


def upscale_images(images: np.ndarray, size: int) -> np.ndarray:
    """(N, 3, s, s) uint8 -> (N, 3, size, size) uint8 (bicubic, antialiased when shrinking)."""
    if images.shape[-1] == size:
        return images
    x = torch.as_tensor(images).float()
    y = F.interpolate(x, size=(size, size), mode="bicubic", antialias=size < images.shape[-1], align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).numpy()


def _resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    if masks.shape[-1] == size:
        return masks
    y = F.interpolate(torch.as_tensor(masks).float(), size=(size, size), mode="nearest")
    return (y > 0.5).to(torch.uint8).numpy()


def synthesize_client(params: Params, client: str, uploads: str | Path, backbone_dir: str | Path, out: str | Path,
                      progress: bool = True) -> dict[str, Any]:
    """Sample ``params.synthesize.n`` image/mask pairs for ``client`` from its upload folder ``uploads`` (the
    backbone resolved in ``backbone_dir``); write its synthetic store ``out``.

    A held-out client uploaded no generator: its synthetic store is written empty (N = 0), so the stage's
    output exists and downstream stages see "no synthetic data from this client".

    Returns:
        the sampling summary (also in the store's attrs under ``synthesis``).
    """
    if client not in params.clients:
        raise DsfedError(f"clients.{client}: no such client (have: {', '.join(params.clients)})")
    cfg, data = params.synthesize, params.data
    uploads, out = Path(uploads), Path(out)
    summary_path = uploads / GENERATOR_SUMMARY
    if not summary_path.is_file():
        raise DsfedError(f"{summary_path}: client {client} has uploaded no generator (run `dvc repro controlnet@{client}`)")
    generator = json.loads(summary_path.read_text())
    k, s, sm = len(data.classes), data.image_size, data.mask_size
    attrs: dict[str, Any] = {
        "dsfed_version": dsfed.__version__, "client": client, "role": "synthetic",
        "classes": list(data.classes), "image_size": s, "mask_size": sm, "seed": params.seed,
        "sampler": cfg.sampler.sampler, "steps": cfg.sampler.steps, "guidance_scale": cfg.sampler.guidance_scale,
    }
    if generator.get("held_out"):
        with atomic_path(out, overwrite=True) as tmp:
            write_store(tmp, np.zeros((0, 3, s, s), np.uint8), np.zeros((0, k, sm, sm), np.uint8), {},
                        {**attrs, "held_out": True, "synthesis": {"n": 0}})
        log.info("client %s is held out: no generator, empty synthetic store %s", client, out)
        return {"client": client, "held_out": True, "n": 0}

    masks, mask_attrs = read_uploaded_masks(uploads)
    if list(mask_attrs.get("classes", [])) != list(data.classes):
        raise DsfedError(
            f"{uploads / 'masks.zarr'}: uploaded mask classes {mask_attrs.get('classes')} differ from data.classes {list(data.classes)}"
        )
    device = pick_device(cfg.device)
    backbone, manifest = load_backbone(backbone_dir, device)
    check_classes(manifest, list(data.classes), f"{uploads / 'masks.zarr'}")
    controlnet = load_controlnet(backbone, uploads / CONTROLNET_FILE)

    seed = stable_seed(params.seed, f"synthesize/{client}")
    cond, source = augment_masks(masks, cfg.n, cfg.augment, seed)
    log.info("client %s: sampling %d images (%s, %d steps, guidance %g) from %d uploaded masks",
             client, cfg.n, cfg.sampler.sampler, cfg.sampler.steps, cfg.sampler.guidance_scale, len(masks))
    t0 = time.perf_counter()
    generated = sample(backbone, controlnet, cond, cfg.sampler, seed=seed, batch_size=cfg.batch_size, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    images = upscale_images(generated, s)
    stored_masks = _resize_masks(cond, sm)

    order = np.random.default_rng(seed).permutation(cfg.n)
    n_val = int(round(cfg.val * cfg.n))
    splits = {"val": np.sort(order[:n_val]), "train": np.sort(order[n_val:])}
    synthesis = {
        "n": cfg.n, "uploaded_masks": len(masks), "augmented": int((np.arange(cfg.n) >= len(masks)).sum()) if cfg.augment.enabled else 0,
        "device": str(device),
        "generated_size": int(generated.shape[-1]), "backbone": manifest.kind, "code_hash": code_hash(*SYNTHESIZE_CODE),
        "controlnet_sha256": sha256_file(uploads / CONTROLNET_FILE),
    }
    with atomic_path(out, overwrite=True) as tmp:
        write_store(tmp, images, stored_masks, splits,
                    {**attrs, "sample_names": [f"{client}_syn{i:05d}" for i in range(cfg.n)],
                     "mask_source": source.tolist(), "synthesis": synthesis})
    log.info("client %s: %d synthetic pairs in %.1f s (%.2f images/s) -> %s", client, cfg.n, seconds, cfg.n / seconds, out)
    # wall time and rate are measurements of this machine: returned for the stage's timings log, not stored
    return {"client": client, "held_out": False, **synthesis, "seconds": round(seconds, 2), "images_per_s": round(cfg.n / seconds, 3)}
