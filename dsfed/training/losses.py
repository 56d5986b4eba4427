"""Segmentation losses by name: BCE with pos_weight plus an optional MONAI Dice term."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.losses import DiceLoss
from torch import Tensor, nn

from dsfed.training.settings import LossConfig

__all__ = ["LOSSES", "LossConfig", "build_loss"]


class BCEDiceLoss(nn.Module):
    """``BCEWithLogits(pos_weight) + dice * DiceLoss(sigmoid)``: logits (B,C,H,W), targets (B,C,H,W) {0,1}."""

    def __init__(self, pos_weight: float, dice: float) -> None:
        super().__init__()
        self.pos_weight: Tensor
        self.register_buffer("pos_weight", torch.tensor(pos_weight))
        self.dice_weight = dice
        self.dice = DiceLoss(sigmoid=True, include_background=True, smooth_nr=1e-5, smooth_dr=1e-5) if dice > 0 else None

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits = logits.float()
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight)
        if self.dice is not None:
            loss = loss + self.dice_weight * self.dice(logits, targets)
        return loss


LOSSES: dict[str, Callable[[LossConfig], nn.Module]] = {
    "bce_dice": lambda cfg: BCEDiceLoss(cfg.pos_weight, cfg.dice),
}


def build_loss(cfg: LossConfig) -> nn.Module:
    if cfg.name not in LOSSES:
        raise KeyError(f"unknown loss {cfg.name!r} (known: {', '.join(sorted(LOSSES))})")
    return LOSSES[cfg.name](cfg)
