"""Per-sample quantities of DSFedMed's learnability score: GT loss, symmetric KL between two models.

Both models are multi-label segmenters: logits (N, C, H, W), one sigmoid per class and pixel, so every
pixel and class is a Bernoulli distribution and the KL divergences are Bernoulli KLs, averaged over
classes and pixels (the paper's "pixel-averaged").
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["bernoulli_kl", "gt_loss", "learnability_scores", "symmetric_kl"]


def gt_loss(logits: Tensor, masks: Tensor, pos_weight: float = 2.0) -> Tensor:
    """Per-sample BCE with ``pos_weight`` (DSFedMed: 2) against ground truth.

    Args:
        logits: (N, C, H, W). masks: (N, C, H, W) in {0, 1}.

    Returns:
        (N,) mean over classes and pixels.
    """
    weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    per_pixel = F.binary_cross_entropy_with_logits(logits, masks.to(logits.dtype), pos_weight=weight, reduction="none")
    return per_pixel.flatten(1).mean(dim=1)


def bernoulli_kl(p_logits: Tensor, q_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(p || q) per sample between the Bernoulli maps sigmoid(p_logits / T) and sigmoid(q_logits / T).

    Computed from log-sigmoids (stable for large logits). Gradients flow into both arguments; detach the
    one that should act as a fixed teacher.

    Args:
        p_logits, q_logits: (N, C, H, W).

    Returns:
        (N,) mean over classes and pixels, >= 0.
    """
    p_logits, q_logits = p_logits / temperature, q_logits / temperature
    log_p, log_1mp = F.logsigmoid(p_logits), F.logsigmoid(-p_logits)
    log_q, log_1mq = F.logsigmoid(q_logits), F.logsigmoid(-q_logits)
    p = log_p.exp()
    kl = p * (log_p - log_q) + (1.0 - p) * (log_1mp - log_1mq)
    return kl.flatten(1).mean(dim=1)


def symmetric_kl(a_logits: Tensor, b_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """(N,) KL(a || b) + KL(b || a), each pixel-averaged."""
    return bernoulli_kl(a_logits, b_logits, temperature) + bernoulli_kl(b_logits, a_logits, temperature)


@torch.no_grad()
def learnability_scores(
    sam_logits: Tensor, tiny_logits: Tensor, masks: Tensor, lam: float = 0.5, temperature: float = 1.0, pos_weight: float = 2.0
) -> Tensor:
    """DSFedMed's learnability score per sample:

        s_i = lam * (-L_GT(SAM)_i) + (1 - lam) * (KL(p_SAM || p_Tiny)_i + KL(p_Tiny || p_SAM)_i)

    High where SAM is right (low GT loss: a trustworthy teacher) and the two models disagree (much to learn).

    Args:
        sam_logits, tiny_logits: (N, C, H, W) on the same grid. masks: (N, C, H, W) {0, 1}.
        lam: weight of the GT term in [0, 1]. temperature: of the KL terms.

    Returns:
        (N,) scores.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    return lam * -gt_loss(sam_logits, masks, pos_weight) + (1.0 - lam) * symmetric_kl(sam_logits, tiny_logits, temperature)
