"""SAM-Fed's two client losses: weighted pseudo-label supervision and global-to-local distillation.

Both treat each class channel as its own binary problem (sigmoid, multi-label), as every segmenter here does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bernoulli_kd", "weighted_bce_dice"]


def weighted_bce_dice(logits: Tensor, target: Tensor, weight: Tensor, dice: float = 0.5, eps: float = 1e-5) -> Tensor:
    """Pixel-weighted BCE plus a weight-masked soft Dice (the dossier's "w-weighted CE + w-masked Dice").

    Args:
        logits: (B, C, H, W) the student's logits.
        target: (B, C, H, W) {0, 1} pseudo-labels.
        weight: (B, C, H, W) in [0, 1]; 0 ignores a pixel.
        dice: weight of the Dice term.

    Returns:
        A scalar: BCE summed over weights / total weight, plus ``dice`` times (1 - weighted Dice) averaged over
        the (sample, class) pairs that keep any pixel. 0 (with a gradient path) when no pixel is kept.
    """
    logits = logits.float()
    total = weight.sum()
    if float(total) <= 0:
        return logits.sum() * 0.0
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / total
    if dice <= 0:
        return bce
    prob = torch.sigmoid(logits)
    dims = (2, 3)
    inter = (weight * prob * target).sum(dims)
    denom = (weight * prob).sum(dims) + (weight * target).sum(dims)
    kept = weight.sum(dims) > 0
    score = (2 * inter + eps) / (denom + eps)
    return bce + dice * (1 - score[kept]).mean()


def bernoulli_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """KL(teacher || student) of the per-pixel Bernoulli distributions at ``temperature``, mean over B*C*H*W.

    HSSF's scale (no T squared factor). Shapes: (B, C, H, W) each; the teacher's side carries no gradient.
    """
    t = temperature
    p_t = torch.sigmoid(teacher_logits.detach().float() / t)
    log_s1 = F.logsigmoid(student_logits.float() / t)
    log_s0 = F.logsigmoid(-student_logits.float() / t)
    log_t1 = torch.log(p_t.clamp_min(1e-8))
    log_t0 = torch.log((1 - p_t).clamp_min(1e-8))
    return (p_t * (log_t1 - log_s1) + (1 - p_t) * (log_t0 - log_s0)).mean()
