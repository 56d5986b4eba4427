"""Which samples distillation learns from: DSFedMed's exp-weighted pool, the released code's batch rule, all.

A registry (name -> rule) so ``params.distill.selection`` picks one: ``pool`` (the paper), ``batch_topk``
(the released code), ``all`` (the ablation without selection).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SELECTIONS", "batch_topk", "pool_size", "sample_pool"]

SELECTIONS = ("pool", "batch_topk", "all")


def pool_size(n: int, rate: float) -> int:
    """round(rate * n), at least 1 when n > 0 and never more than n."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"selection rate must be in (0, 1], got {rate}")
    return min(n, max(1 if n else 0, int(round(rate * n))))


def sample_pool(scores: Tensor, rate: float, tau: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """The round's pool: ``pool_size(N, rate)`` distinct sample indices, drawn without replacement with
    probability proportional to exp(s_i / tau) (successive weighted draws, ``torch.multinomial``).

    Args:
        scores: (N,) learnability scores. tau: temperature (large: uniform; small: the top scores).

    Returns:
        (k,) int64 indices, in draw order.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    s = scores.detach().double().flatten()
    weights = torch.exp((s - s.max()) / tau)  # shifted: same distribution, no overflow
    k = pool_size(len(s), rate)
    if k == 0:
        return torch.zeros(0, dtype=torch.int64)
    return torch.multinomial(weights, k, replacement=False, generator=generator)


def batch_topk(gt_sam: Tensor, gt_tiny: Tensor, sym_kl: Tensor, quantile: float = 0.7, keep: float = 0.5) -> Tensor:
    """The released code's per-batch rule: samples whose GT loss is at or under the batch's ``quantile``
    for *both* models, then of those the top ``keep`` share by symmetric KL. KL terms apply only to them.

    Args:
        gt_sam, gt_tiny, sym_kl: (B,) per-sample values of one batch.

    Returns:
        (B,) bool: the samples whose KL terms count.
    """
    reliable = (gt_sam <= torch.quantile(gt_sam.float(), quantile)) & (gt_tiny <= torch.quantile(gt_tiny.float(), quantile))
    chosen = torch.zeros_like(reliable)
    candidates = torch.nonzero(reliable).flatten()
    if len(candidates) == 0:
        return chosen
    k = max(1, math.ceil(keep * len(candidates)))
    top = torch.topk(sym_kl[candidates], k).indices
    chosen[candidates[top]] = True
    return chosen
