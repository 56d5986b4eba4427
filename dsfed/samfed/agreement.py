"""SAM-Fed's pixel supervision of unlabelled images: the adaptive agreement mask and its threshold.

Pure tensor functions (no model, no state). The rule is the dossier's PROPOSAL (docs/samfed.md, O3), built on
TI-ST's two-prediction confidence mask: where the SAM teacher and the partner (the received global model) agree
and are both confident, the pixel is supervised with their label; where they disagree, the more confident of
the two supervises if its confidence clears ``2 tau - 1``, weighted by that confidence; every other pixel is
ignored. Probabilities are per class channel (sigmoid, multi-label), so a K-class task is K binary ones.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "agreement_targets",
    "confidence",
    "confidence_histogram",
    "histogram_quantile",
    "next_threshold",
    "sam_targets",
    "self_targets",
]

BINS = 1000
"""Resolution of the confidence histograms the adaptive threshold is read from (0.001)."""


def confidence(p: Tensor) -> Tensor:
    """``|2p - 1|``: 0 where a probability says nothing, 1 where it is certain. Any shape, same shape out."""
    return (2 * p - 1).abs()


def agreement_targets(p_teacher: Tensor, p_partner: Tensor, tau: float, arbitration: bool = True) -> tuple[Tensor, Tensor]:
    """The agreement mask's pseudo-labels and pixel weights.

    Args:
        p_teacher: (B, C, H, W) the SAM teacher's foreground probabilities in [0, 1].
        p_partner: (B, C, H, W) the partner's (the global model's) probabilities on the same pixels.
        tau: the threshold in (0.5, 1): agreement means both above ``tau`` or both below ``1 - tau``.
        arbitration: keep confident disagreements (the more confident source's label, weighted by its
            confidence, if that confidence exceeds ``2 tau - 1``); False ignores every disagreement.

    Returns:
        target: (B, C, H, W) float {0, 1}: the label each pixel is supervised with.
        weight: (B, C, H, W) float in [0, 1]: 1 on agreement, the winner's confidence on a kept
            disagreement, 0 where the pixel is ignored.
    """
    if p_teacher.shape != p_partner.shape:
        raise ValueError(f"teacher {tuple(p_teacher.shape)} and partner {tuple(p_partner.shape)} probabilities differ in shape")
    if not 0.5 < tau < 1:
        raise ValueError(f"tau must be in (0.5, 1), got {tau}")
    p_t, p_p = p_teacher.detach().float(), p_partner.detach().float()
    agree = ((p_t > tau) & (p_p > tau)) | ((p_t < 1 - tau) & (p_p < 1 - tau))
    c_t, c_p = confidence(p_t), confidence(p_p)
    teacher_wins = c_t >= c_p
    winner_label = torch.where(teacher_wins, p_t > 0.5, p_p > 0.5)
    winner_conf = torch.where(teacher_wins, c_t, c_p)
    kept = ~agree & (winner_conf > 2 * tau - 1) if arbitration else torch.zeros_like(agree)
    target = torch.where(agree, p_t > 0.5, winner_label).float()
    weight = agree.float() + kept.float() * winner_conf
    return target, weight


def sam_targets(p_teacher: Tensor) -> tuple[Tensor, Tensor]:
    """SAM's hard labels on every pixel (the "SAM pseudo-labels without agreement" baseline).

    p_teacher: (B, C, H, W) -> target (B, C, H, W) {0, 1}, weight (B, C, H, W) ones.
    """
    p = p_teacher.detach().float()
    return (p > 0.5).float(), torch.ones_like(p)


def self_targets(p_weak: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """FixMatch-style self-training: the model's own weak-view label where its confidence ``max(p, 1-p)``
    exceeds ``tau``, weight 1 there and 0 elsewhere.

    p_weak: (B, C, H, W) -> target, weight (B, C, H, W).
    """
    p = p_weak.detach().float()
    return (p > 0.5).float(), ((p > tau) | (p < 1 - tau)).float()


def confidence_histogram(p: Tensor, bins: int = BINS) -> Tensor:
    """(bins,) float64 counts of ``max(p, 1 - p)`` over every element of ``p`` (any shape), on [0.5, 1]."""
    top = torch.maximum(p.detach().float(), 1 - p.detach().float()).flatten()
    return torch.histc(top, bins=bins, min=0.5, max=1.0).double().cpu()


def histogram_quantile(hist: Tensor, q: float) -> float:
    """The ``q`` quantile of the values a :func:`confidence_histogram` counted (bin upper edge); nan if empty."""
    total = float(hist.sum())
    if total <= 0:
        return float("nan")
    cumulative = torch.cumsum(hist, 0) / total
    index = int(torch.searchsorted(cumulative, torch.tensor(q, dtype=cumulative.dtype)).clamp(max=len(hist) - 1))
    return 0.5 + 0.5 * (index + 1) / len(hist)


def next_threshold(hist: Tensor, current: float, quantile: float, low: float, high: float) -> float:
    """The adaptive threshold for the next round: the partner's confidence ``quantile`` over this round's
    pixels (``hist``), clipped to [low, high]; ``current`` when the histogram is empty."""
    value = histogram_quantile(hist, quantile)
    if value != value:  # nan: nothing was counted
        return current
    return float(min(max(value, low), high))
