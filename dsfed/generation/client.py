"""Run at the client (the ``controlnet@<client>`` stage): fine-tune the generic ControlNet on private pairs.

What leaves the client (its upload folder, ``artifacts/generators/<client>/``; each upload in the ledger):
``controlnet.safetensors`` (fp16 weights) and ``masks.zarr`` (the training masks, no images). The loss
curve (dvclive) and ``generator.json`` (before/after loss, timings) stay as the client's own records.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from diffusers import ControlNetModel
from torch.nn import functional as F

from dsfed.config import Params
from dsfed.data.sample_arrays import write_sample_array
from dsfed.data.store import ClientStore
from dsfed.errors import DsfedError
from dsfed.federated.ledger import Ledger
from dsfed.generation.backbone import Backbone
from dsfed.generation.backbones import check_classes, generic_controlnet, load_backbone
from dsfed.generation.condition import render_condition
from dsfed.generation.controlnet import save_controlnet
from dsfed.generation.settings import DiffusionTrainSpec
from dsfed.generation.train import Noiser, controlnet_forward, train_controlnet
from dsfed.io import atomic_path, write_json
from dsfed.provenance import CONTROLNET_CODE, provenance
from dsfed.runtime import pick_device

__all__ = [
    "CONTROLNET_FILE",
    "GENERATOR_SUMMARY",
    "MASKS_FILE",
    "MEASURED",
    "fixed_noise_loss",
    "read_pairs",
    "read_uploaded_masks",
    "train_client_generator",
    "write_held_out",
    "write_masks",
]

log = logging.getLogger(__name__)

CONTROLNET_FILE = "controlnet.safetensors"
MASKS_FILE = "masks.zarr"
GENERATOR_SUMMARY = "generator.json"
MEASURED = ("seconds", "steps_per_s")  # summary keys measured on this machine: returned, not written


def dir_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (what a transfer of it costs)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_masks(path: Path, masks: np.ndarray, attrs: dict[str, Any]) -> None:
    """The masks upload: one Zarr array (M, K, Sm, Sm) uint8 in the layout of :func:`write_sample_array`."""
    group = zarr.open_group(path, mode="w")
    write_sample_array(group, "masks", masks.astype(np.uint8))
    group.attrs.update(attrs)


def read_uploaded_masks(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """(M, K, Sm, Sm) uint8 masks and their attrs from an upload folder; a clear error if absent."""
    path = folder / MASKS_FILE
    if not (path / "zarr.json").is_file():
        raise DsfedError(f"{path}: no uploaded masks (run `dvc repro controlnet@{folder.name}` first)")
    group = zarr.open_group(path, mode="r")
    return np.asarray(group["masks"][:], dtype=np.uint8), dict(group.attrs)


@torch.no_grad()
def fixed_noise_loss(
    backbone: Backbone,
    controlnet: ControlNetModel,
    images: np.ndarray,
    masks: np.ndarray,
    draws: int = 4,
    seed: int = 1234,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
) -> float:
    """The training objective on ``images`` (N, 3, H, W) uint8 / ``masks`` (N, K, h, w) at fixed noise and
    timesteps (``draws`` per image, from ``seed``): comparable before and after training, unlike the
    per-step loss, whose random timesteps make it noisy. Mean squared error per element."""
    device = torch.device(device)
    controlnet.to(device).eval()
    gen = torch.Generator(device).manual_seed(seed)
    noiser = Noiser(backbone, device)
    x_all = torch.as_tensor(images).repeat(draws, 1, 1, 1)
    m_all = torch.as_tensor(masks).repeat(draws, 1, 1, 1)
    total, count = 0.0, 0
    for lo in range(0, len(x_all), batch_size):
        x0 = backbone.encode_images(x_all[lo : lo + batch_size].to(device).float() / 127.5 - 1.0)
        noisy, t, target = noiser(x0, gen)
        cond = render_condition(m_all[lo : lo + batch_size].to(device), backbone.condition_size)
        pred = controlnet_forward(backbone, controlnet, noisy, t, cond, backbone.encode_prompt(len(x0)))
        total += float(F.mse_loss(pred.float(), target, reduction="sum"))
        count += target.numel()
    return total / max(count, 1)


def read_pairs(store: ClientStore, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 3, S, S), masks (n, K, Sm, Sm)) uint8 of the store rows ``indices`` (empty arrays for none)."""
    if len(indices) == 0:
        s, k, sm = store.images.shape[-1], store.masks.shape[1], store.masks.shape[-1]
        return np.zeros((0, 3, s, s), np.uint8), np.zeros((0, k, sm, sm), np.uint8)
    return (np.stack([np.asarray(store.images[int(i)]) for i in indices]),
            np.stack([np.asarray(store.masks[int(i)]) for i in indices]))


def _write_curve(out: Path, losses: list[float]) -> None:
    from dvclive import Live

    with Live(dir=str(out / "dvclive"), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        for value in losses:
            live.log_metric("loss", value)
            live.next_step()


def write_held_out(out: Path, client: str) -> dict[str, Any]:
    """The held-out client's folder: no generator, an empty ledger and ``generator.json`` saying so."""
    held: dict[str, Any] = {"client": client, "held_out": True, "uploads": {}}
    with atomic_path(out, overwrite=True) as tmp:
        tmp.mkdir(parents=True)
        Ledger(tmp / "ledger.csv").ensure()
        write_json(tmp / GENERATOR_SUMMARY, held)
    log.info("client %s is held out (data.holdout): it trains no generator", client)
    return held


def train_client_generator(
    params: Params, client: str, store_dir: str | Path, backbone_dir: str | Path, out: str | Path, progress: bool = True,
    recorded_manifest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune the generic ControlNet on ``client``'s training pairs (its store ``store_dir``, the backbone
    resolved in ``backbone_dir``); write its upload folder ``out`` atomically. ``recorded_manifest``: the
    backbone manifest the ControlNet's provenance records (a node's: the server's, not its local copy's paths).

    The held-out client trains no generator: its folder then holds only ``generator.json`` saying so.

    Returns:
        the summary written to ``generator.json`` (loss before/after on the client's training and
        validation pairs at fixed noise, upload bytes), plus the measured ``seconds`` and ``steps_per_s``
        (:data:`MEASURED`: not written, so the folder's bytes do not depend on the machine's speed).
    """
    if client not in params.clients:
        raise DsfedError(f"clients.{client}: no such client (have: {', '.join(params.clients)})")
    out = Path(out)
    store = ClientStore(store_dir)
    if store.is_holdout:
        return write_held_out(out, client)

    cfg = params.controlnet
    device = pick_device(cfg.device)
    backbone, manifest = load_backbone(backbone_dir, device)
    check_classes(manifest, store.classes, f"clients.{client} (store {store.path})")
    train_images, train_masks = read_pairs(store, store.split("train"))
    val_images, val_masks = read_pairs(store, store.split("val"))
    if len(train_images) == 0:
        raise DsfedError(f"clients.{client}: the store {store.path} has no training samples")
    controlnet = generic_controlnet(backbone, manifest)
    spec = DiffusionTrainSpec(**cfg.model_dump(exclude={"device", "check_draws"}) | {"seed": cfg.seed + params.seed})
    checks = {"train": (train_images, train_masks), "val": (val_images, val_masks)}
    checks = {name: pair for name, pair in checks.items() if len(pair[0])}
    draws = cfg.check_draws
    before = {name: fixed_noise_loss(backbone, controlnet, *pair, draws=draws, device=device) for name, pair in checks.items()}
    log.info("client %s: fine-tuning the ControlNet on %d pairs, %d steps of %d", client, len(train_images), spec.steps, spec.batch_size)
    t0 = time.perf_counter()
    losses = train_controlnet(backbone, controlnet, train_images, train_masks, spec, device, progress)
    seconds = time.perf_counter() - t0
    after = {name: fixed_noise_loss(backbone, controlnet, *pair, draws=draws, device=device) for name, pair in checks.items()}

    meta = provenance({"client": client, "controlnet": cfg.model_dump(mode="json"),
                       "backbone": recorded_manifest if recorded_manifest is not None else manifest.to_json()}, code=CONTROLNET_CODE)
    # the stage, not the process's command line: the same upload whether the client ran in the stage's process
    # or as a Flower node (whose command names its ClientApp)
    del meta["command"]
    meta["stage"] = f"controlnet@{client}"
    meta["classes"] = list(store.classes)
    summary: dict[str, Any] = {
        "client": client,
        "held_out": False,
        "n_train": len(train_images),
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "seconds": round(seconds, 2),
        "steps_per_s": round(spec.steps / seconds, 3),
        "device": str(device),
        # the objective at fixed noise and timesteps, before (the generic ControlNet) and after fine-tuning
        "fixed_noise_loss": {split: {"generic": before[split], "fine_tuned": after[split]} for split in checks},
        "loss_first_10": float(np.mean(losses[:10])),
        "loss_last_10": float(np.mean(losses[-10:])),
    }
    with atomic_path(out, overwrite=True) as tmp:
        tmp.mkdir(parents=True)
        save_controlnet(controlnet.to("cpu"), tmp / CONTROLNET_FILE, meta)
        write_masks(tmp / MASKS_FILE, train_masks, {"client": client, "classes": list(store.classes),
                                                    "mask_size": int(train_masks.shape[-1]), "n": len(train_masks)})
        uploads = {"controlnet": dir_bytes(tmp / CONTROLNET_FILE), "masks": dir_bytes(tmp / MASKS_FILE)}
        ledger = Ledger(tmp / "ledger.csv")
        for what, nbytes in uploads.items():
            ledger.record(0, client, "up", what, nbytes)
        summary["uploads"] = uploads
        _write_curve(tmp, losses)
        # wall time and rate are measurements, not results: returned (the stage logs them), never hashed
        write_json(tmp / GENERATOR_SUMMARY, {**{k: v for k, v in summary.items() if k not in MEASURED}, "code_hash": meta["code_hash"]})
    log.info("client %s: fixed-noise loss %s; uploads %s", client,
             ", ".join(f"{k} {before[k]:.4f} -> {after[k]:.4f}" for k in checks), uploads)
    return summary

