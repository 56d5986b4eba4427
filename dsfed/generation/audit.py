"""The ``quality@<client>`` stage, run at the client: is its synthetic set controllable, realistic, novel?

The server sends the client its synthetic set (a ledger ``down`` row); the client compares it with its
real data, which never leaves, and returns only ``quality.json`` (an ``up`` row). Outputs, in
``<artifacts>/quality/<client>/``: ``quality.json``, ``grid.png``, ``audit_ledger.csv``.

- controllability: a segmenter trained on the client's real training pairs only, scored (Dice) on the
  synthetic images against the masks they were conditioned on; its Dice on the client's real test
  images is the ceiling to read it against;
- realism: Frechet distance of ImageNet EfficientNet-Lite0 features, real training images vs synthetic,
  beside the same distance for the client's own held-out real images at equal sample size (as they are,
  and taken through the generator's resolution), and the mean colour of each set;
- memorisation: nearest-training-image distances of synthetic vs held-out real images.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dsfed.config import Params
from dsfed.data.dataset import StoreDataset
from dsfed.data.splits import stable_seed
from dsfed.data.store import ClientStore
from dsfed.errors import DsfedError
from dsfed.evaluation.metrics import evaluate, summarise
from dsfed.federated.ledger import Ledger
from dsfed.generation.client import dir_bytes, read_pairs
from dsfed.generation.condition import render_condition
from dsfed.generation.grid import outline, save_grid
from dsfed.generation.quality import efficientnet_lite0, frechet_distance, image_features, memorisation, pixel_vectors
from dsfed.generation.server import upscale_images
from dsfed.generation.settings import SegmenterConfig
from dsfed.io import atomic_path, write_json
from dsfed.models.registry import build_model
from dsfed.models.segmenter import Segmenter
from dsfed.runtime import pick_device
from dsfed.training.loop import train_epochs
from dsfed.training.losses import build_loss

__all__ = ["AUDIT_LEDGER", "GRID", "QUALITY", "audit_client", "train_judge"]

log = logging.getLogger(__name__)

QUALITY = "quality.json"
GRID = "grid.png"
AUDIT_LEDGER = "audit_ledger.csv"


def train_judge(params: Params, store: ClientStore, cfg: SegmenterConfig, device: torch.device, seed: int) -> Segmenter:
    """A segmenter trained on ``store``'s real training split only (the federated stages' loss and augmentation)."""
    torch.manual_seed(seed)
    model = build_model(cfg.model, num_classes=len(params.data.classes), output_size=params.data.mask_size,
                        input_size=cfg.input_size).to(device)
    dataset = StoreDataset(store, "train", augment=params.federated.augment if params.federated.augment.enabled else None, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=gen)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    train_epochs(model, loader, optimizer, build_loss(params.federated.loss), epochs=cfg.epochs, device=device, desc="judge", generator=gen)
    return model.eval()


def _scores(model: Segmenter, store: ClientStore, split: str, classes: list[str], subset: np.ndarray | None = None) -> dict[str, Any]:
    dataset = StoreDataset(store, split)
    if subset is not None:
        dataset.indices = dataset.indices[subset]
    if len(dataset) == 0:
        return {"n": 0}
    metrics = evaluate(model, dataset)
    summary = summarise(metrics, classes)
    return {"n": len(dataset), **{k: round(v, 4) for k, v in summary.items()}}


def _bottleneck(images: np.ndarray, size: int) -> np.ndarray:
    """Real images through the generator's resolution: down to ``size`` (antialiased), back up (bicubic)."""
    if size >= images.shape[-1]:
        return images
    x = torch.nn.functional.interpolate(torch.as_tensor(images).float(), size=(size, size), mode="bilinear", antialias=True)
    return upscale_images(x.round().clamp(0, 255).to(torch.uint8).numpy(), images.shape[-1])


def _realism(net: torch.nn.Module, train: np.ndarray, held: np.ndarray, syn: np.ndarray, generated_size: int,
             feature_size: int, seed: int, repeats: int = 5) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Frechet distances on EfficientNet-Lite0 features, all at the held-out sample size n (Frechet
    distances shrink as n grows, so only equal-n values compare):

    - ``real_heldout``: FD(train, held-out real), the floor a perfect generator would reach;
    - ``real_heldout_at_generated_size``: the same with the held-out images taken down to the generator's
      resolution and back, the floor for a perfect generator *at that resolution*;
    - ``synthetic``: FD(train, n synthetic), mean (and std) over ``repeats`` random subsets.
    Also the mean RGB of each set (the client's colour style). Returns the report and the features.
    """
    f_train, f_held, f_syn = (image_features(x, net, size=feature_size) for x in (train, held, syn))
    f_bottleneck = image_features(_bottleneck(held, generated_size), net, size=feature_size)
    rng = np.random.default_rng(seed)
    n = min(len(held), len(syn))
    subsets = [frechet_distance(f_train, f_syn[rng.choice(len(syn), n, replace=False)]) for _ in range(repeats)]
    colour = {name: [round(float(v), 1) for v in x.reshape(len(x), 3, -1).mean(axis=(0, 2))]
              for name, x in (("real_train", train), ("real_heldout", held), ("synthetic", syn))}
    report = {
        "features": "efficientnet_lite0 (ImageNet, 1280-d pooled; not Inception, so not FID)",
        "n_train": len(train), "n_compared": n, "generated_size": generated_size,
        "real_heldout": round(frechet_distance(f_train, f_held[:n]), 3),
        "real_heldout_at_generated_size": round(frechet_distance(f_train, f_bottleneck[:n]), 3),
        "synthetic": round(float(np.mean(subsets)), 3),
        "synthetic_std": round(float(np.std(subsets)), 3),
        "mean_rgb": colour,
    }
    return report, (f_train, f_held, f_syn)


def audit_client(params: Params, client: str, store_dir: str | Path, synthetic_dir: str | Path, out: str | Path,
                 progress: bool = True) -> dict[str, Any]:
    """Score ``client``'s synthetic set (``synthetic_dir``) against its real data (its store ``store_dir``); write
    ``quality.json``, ``grid.png`` and the audit ledger into ``out`` (all atomically).

    Returns:
        the quality summary.
    """
    if client not in params.clients:
        raise DsfedError(f"clients.{client}: no such client (have: {', '.join(params.clients)})")
    cfg = params.quality
    real = ClientStore(store_dir)
    synth_path = Path(synthetic_dir)
    synth = ClientStore(synth_path)
    out = Path(out)
    classes = list(params.data.classes)
    n_grid = cfg.grid_n
    if synth.attrs.get("held_out"):
        test_images, test_masks = read_pairs(real, real.split("test")[:n_grid])
        conditions = (render_condition(test_masks, real.images.shape[-1]).numpy() * 255).round().astype(np.uint8)
        quality = {"client": client, "held_out": True, "note": "held-out client: no generator, no synthetic set"}
        _write(out, quality, [conditions, test_images], ledger_rows=[])
        return quality

    t_start = time.perf_counter()
    device = pick_device(cfg.device)
    seed = stable_seed(params.seed, f"quality/{client}")
    train_idx = real.split("train")
    held_idx = np.concatenate([real.split("val"), real.split("test")])
    train_images, train_masks = read_pairs(real, train_idx)
    held_images, _ = read_pairs(real, held_idx)
    syn_images, syn_masks = read_pairs(synth, np.arange(len(synth)))
    source = np.asarray(synth.attrs.get("mask_source", []), dtype=np.int64)
    first_pass = np.arange(len(synth)) < int(synth.attrs.get("synthesis", {}).get("uploaded_masks", len(synth)))

    log.info("client %s: training the controllability judge (%s) on %d real pairs", client, cfg.segmenter.model, len(train_idx))
    judge = train_judge(params, real, cfg.segmenter, device, seed)
    controllability = {
        "judge": cfg.segmenter.model_dump(mode="json"),
        "real_test": _scores(judge, real, "test", classes),
        "synthetic": _scores(judge, synth, "all", classes),
        "synthetic_uploaded_masks": _scores(judge, synth, "all", classes, np.flatnonzero(first_pass)),
        "synthetic_augmented_masks": _scores(judge, synth, "all", classes, np.flatnonzero(~first_pass)),
    }

    log.info("client %s: EfficientNet-Lite0 features of %d real and %d synthetic images", client, len(train_idx) + len(held_idx), len(synth))
    net = efficientnet_lite0().to(device)
    generated_size = int(synth.attrs.get("synthesis", {}).get("generated_size", syn_images.shape[-1]))
    realism, (f_train, f_held, f_syn) = _realism(net, train_images, held_images, syn_images, generated_size, cfg.feature_size, seed)
    memo: dict[str, Any] = {
        "pixels": memorisation(syn_images, train_images, held_images),
        "features": memorisation(f_syn, f_train, f_held, metric="cosine"),
    }
    if len(source) == len(synth):
        # a synthetic image shares its conditioning mask's geometry with one training image (the mask's
        # own): how often is that image its nearest neighbour? High with a low feature-space ratio would
        # mean copying; high with a feature ratio >= 1 means the shared geometry, which the upload gives.
        memo["pixels"]["nearest_is_source_share"] = _nearest_is_source(syn_images[first_pass], train_images, source[first_pass])
    if (~first_pass).any():  # augmented masks: geometry no training image has, so closeness is texture
        memo["pixels_augmented_masks"] = memorisation(syn_images[~first_pass], train_images, held_images)
    quality = {
        "client": client,
        "held_out": False,
        "n_synthetic": len(synth),
        "n_real_train": len(train_idx),
        "n_real_heldout": len(held_idx),
        "controllability": controllability,
        "realism_frechet": realism,
        "memorisation": memo,
    }
    # grid: conditioning masks, the real image of each mask, the synthetic image of the same mask
    # (outlined too), then synthetic images on augmented masks
    first = np.flatnonzero(first_pass)[:n_grid]
    size = real.images.shape[-1]
    rows = [
        (render_condition(syn_masks[first], size).numpy() * 255).round().astype(np.uint8),
        train_images[source[first]] if len(source) else train_images[:len(first)],
        syn_images[first],
        np.stack([outline(i, m_up) for i, m_up in zip(syn_images[first], _upsample(syn_masks[first], size), strict=True)]),
    ]
    augmented = np.flatnonzero(~first_pass)[:n_grid]
    if len(augmented) == len(first):
        rows.append(syn_images[augmented])
    ledger_rows = [("down", "synthetic_set", dir_bytes(synth_path))]
    _write(out, quality, rows, ledger_rows)
    c = controllability
    log.info("client %s: controllability Dice %.3f (judge on real test %.3f); FD synthetic %.1f vs real %.1f; memorisation %s",
             client, c["synthetic"].get("dice", float("nan")), c["real_test"].get("dice", float("nan")),
             realism["synthetic"], realism["real_heldout"], memo["pixels"]["label"])
    # the wall time is a measurement of this machine: returned (for the timings log), not in the hashed quality.json
    return {**quality, "seconds": round(time.perf_counter() - t_start, 2)}


def _nearest_is_source(synthetic: np.ndarray, train: np.ndarray, source: np.ndarray) -> float:
    """Share of ``synthetic`` images (from uploaded masks) whose nearest training image (32 px pixels, L2)
    is the one whose mask conditioned them (``source``, index into ``train``)."""
    if len(synthetic) == 0:
        return float("nan")
    d = torch.cdist(torch.from_numpy(pixel_vectors(synthetic)), torch.from_numpy(pixel_vectors(train)))
    return round(float((d.argmin(dim=1).numpy() == source).mean()), 4)


def _upsample(masks: np.ndarray, size: int) -> np.ndarray:
    """(N, K, h, h) {0, 1} -> (N, K, size, size), nearest neighbour."""
    if masks.shape[-1] == size:
        return masks
    return torch.nn.functional.interpolate(torch.as_tensor(masks).float(), size=(size, size), mode="nearest").to(torch.uint8).numpy()


def _write(out: Path, quality: dict[str, Any], rows: list[np.ndarray], ledger_rows: list[tuple[str, str, int]]) -> None:
    """quality.json, grid.png and the audit ledger, each written atomically; the ``up`` row is quality.json's size."""
    out.mkdir(parents=True, exist_ok=True)
    client = str(quality["client"])
    write_json(out / QUALITY, quality)
    if rows and len(rows[0]):
        save_grid(out / GRID, rows)
    else:
        save_grid(out / GRID, [np.full((1, 3, 8, 8), 255, np.uint8)])
    with atomic_path(out / AUDIT_LEDGER, overwrite=True) as tmp:
        ledger = Ledger(tmp)
        ledger.ensure()
        for direction, what, nbytes in ledger_rows:
            ledger.record(0, client, direction, what, nbytes)
        if ledger_rows:
            ledger.record(0, client, "up", "quality_report", (out / QUALITY).stat().st_size)
