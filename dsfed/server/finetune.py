"""The server fine-tunes its foundation SAM on the union of the clients' synthetic sets (the ``server_sam``
stage, :mod:`dsfed.stages.server_sam`, gives it the stores).

The epoch kept is the one with the best mean Dice over the source clients' synthetic val splits (epoch 0
is the foundation model itself).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader

from dsfed.config import Params
from dsfed.data.dataset import StoreDataset
from dsfed.data.store import ClientStore
from dsfed.evaluation.metrics import evaluate, summarise
from dsfed.models import Segmenter, build_model
from dsfed.runtime import pick_device
from dsfed.training.loop import train_epochs
from dsfed.training.losses import build_loss

__all__ = ["ServerSamRun", "finetune_server_sam", "freeze_image_encoder", "synthetic_val_dice"]

log = logging.getLogger(__name__)


def freeze_image_encoder(model: Segmenter) -> int:
    """Freeze a SAM-family model's image encoder (the released DSFedMed code's option); returns the
    number of parameters frozen (0 for models without one)."""
    encoder = getattr(getattr(model, "sam", None), "image_encoder", None)
    if encoder is None:
        return 0
    for p in encoder.parameters():
        p.requires_grad_(False)
    return sum(p.numel() for p in encoder.parameters())


def synthetic_val_dice(model: Segmenter, stores: dict[str, ClientStore], classes: list[str]) -> dict[str, float]:
    """Mean Dice per source client on its synthetic val split, and their mean under ``mean``."""
    out = {name: summarise(evaluate(model, StoreDataset(store, "val")), classes)["dice"] for name, store in stores.items()}
    out["mean"] = float(np.mean(list(out.values())))
    return out


@dataclass
class ServerSamRun:
    """The fine-tuned model (selected epoch's weights loaded) and what happened."""

    model: Segmenter
    selected_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    train_samples: int = 0
    wall_s: float = 0.0


def finetune_server_sam(params: Params, stores: dict[str, ClientStore], progress: bool = True) -> ServerSamRun:
    """Fine-tune ``params.server_sam.model`` from its checkpoint on ``stores``' synthetic train splits (the source
    clients' synthetic sets), selecting the epoch by their val splits."""
    cfg = params.server_sam
    classes = list(params.data.classes)
    device = pick_device(cfg.device)
    torch.manual_seed(params.seed)
    model = build_model(cfg.model, num_classes=len(classes), output_size=params.data.mask_size,
                        input_size=cfg.input_size, checkpoint=cfg.checkpoint, classes=tuple(classes)).to(device)
    if cfg.freeze_encoder:
        log.info("server_sam: image encoder frozen (%d parameters)", freeze_image_encoder(model))
    train: ConcatDataset[dict[str, torch.Tensor]] = ConcatDataset([StoreDataset(store, "train", augment=cfg.augment if cfg.augment.enabled else None, seed=params.seed + i)
                           for i, store in enumerate(stores.values())])
    loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(params.seed))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    loss_fn = build_loss(cfg.loss).to(device)
    t0 = time.perf_counter()
    val = synthetic_val_dice(model, stores, classes)
    history: list[dict[str, Any]] = [{"epoch": 0, "train_loss": None, **{f"val_dice_{k}": v for k, v in val.items()}}]
    best = (val["mean"], 0, {k: v.detach().clone() for k, v in model.state_dict().items()})
    log.info("server_sam: foundation model, synthetic val Dice %.4f", val["mean"])
    for epoch in range(1, cfg.epochs + 1):
        stats = train_epochs(model, loader, optimizer, loss_fn, amp=cfg.amp, device=device, desc=f"server_sam epoch {epoch}/{cfg.epochs}")
        val = synthetic_val_dice(model, stores, classes)
        history.append({"epoch": epoch, "train_loss": stats["loss"], **{f"val_dice_{k}": v for k, v in val.items()}})
        log.info("server_sam: epoch %d, loss %.4f, synthetic val Dice %.4f", epoch, stats["loss"], val["mean"])
        if val["mean"] > best[0]:
            best = (val["mean"], epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[2])
    return ServerSamRun(model=model.eval(), selected_epoch=best[1], history=history, train_samples=len(train),
                        wall_s=time.perf_counter() - t0)
