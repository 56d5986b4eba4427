"""The server fine-tunes its foundation SAM on the union of the clients' synthetic sets (the ``server_sam``
stage, :mod:`dsfed.stages.server_sam`, gives it the stores).

The epoch kept (epoch 0 is the foundation model itself) is the one with the best mean Dice on the source
clients' real val splits, scored at the clients (``real_score``), or on their synthetic val splits when no
scorer is given (DSFedMed's code). The synthetic curve is recorded either way.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
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


def finetune_server_sam(params: Params, stores: dict[str, ClientStore], progress: bool = True,
                        real_score: Callable[[int, Segmenter], float] | None = None) -> ServerSamRun:
    """Fine-tune ``params.server_sam.model`` from its checkpoint on ``stores``' synthetic train splits (the source
    clients' synthetic sets), selecting the epoch by ``real_score(epoch, model)`` (the clients' mean real val
    Dice; NaN counts as the lowest) when given, else by the synthetic val splits."""
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

    def record(epoch: int, loss: float | None) -> dict[str, Any]:
        val = synthetic_val_dice(model, stores, classes)
        row: dict[str, Any] = {"epoch": epoch, "train_loss": loss, **{f"val_dice_{k}": v for k, v in val.items()}}
        if real_score is not None:
            row["real_val_dice"] = real_score(epoch, model)
        history.append(row)
        return row

    def key(row: dict[str, Any]) -> float:
        value = float(row["real_val_dice"] if real_score is not None else row["val_dice_mean"])
        return value if math.isfinite(value) else float("-inf")

    history: list[dict[str, Any]] = []
    row = record(0, None)
    best = (key(row), 0, {k: v.detach().clone() for k, v in model.state_dict().items()})
    log.info("server_sam: foundation model, synthetic val Dice %.4f%s", row["val_dice_mean"],
             f", real val Dice {row['real_val_dice']:.4f}" if real_score is not None else "")
    for epoch in range(1, cfg.epochs + 1):
        stats = train_epochs(model, loader, optimizer, loss_fn, amp=cfg.amp, device=device, desc=f"server_sam epoch {epoch}/{cfg.epochs}")
        row = record(epoch, stats["loss"])
        log.info("server_sam: epoch %d, loss %.4f, synthetic val Dice %.4f%s", epoch, stats["loss"], row["val_dice_mean"],
                 f", real val Dice {row['real_val_dice']:.4f}" if real_score is not None else "")
        if key(row) > best[0]:
            best = (key(row), epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
    if best[1] == 0 and cfg.epochs and real_score is not None:
        log.warning("server_sam: no fine-tuned epoch beat the foundation on the source clients' real validation "
                    "(foundation %.4f, best epoch %.4f): the foundation is kept as the teacher", history[0]["real_val_dice"],
                    max(float(r["real_val_dice"]) for r in history[1:]))
    model.load_state_dict(best[2])
    return ServerSamRun(model=model.eval(), selected_epoch=best[1], history=history, train_samples=len(train),
                        wall_s=time.perf_counter() - t0)
