"""The mutual-distillation loss: both models learn the ground truth and from each other's predictions."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from dsfed.distill.scores import bernoulli_kl, gt_loss

__all__ = ["DistillLoss", "mutual_distillation_loss"]


@dataclass(frozen=True)
class DistillLoss:
    """The total and its parts (scalars): ``total = w_gt * (gt_sam + gt_tiny) + w_kl * (kl_sam_tiny + kl_tiny_sam)``."""

    total: Tensor
    gt_sam: Tensor
    gt_tiny: Tensor
    kl_sam_tiny: Tensor
    kl_tiny_sam: Tensor


def mutual_distillation_loss(
    sam_logits: Tensor,
    tiny_logits: Tensor,
    masks: Tensor,
    w_gt: float = 1.0,
    w_kl: float = 1.0,
    temperature: float = 1.0,
    mutual: bool = True,
    kl_mask: Tensor | None = None,
    pos_weight: float = 2.0,
) -> DistillLoss:
    """DSFedMed's loss on a batch.

    ``mutual``: both KL directions train both models (SAM learns from TinySAM too). ``mutual=False`` (the
    paper's Table 4 ablation): SAM only teaches, its logits detached in the KL terms, so the KL gradient
    reaches TinySAM alone; SAM still learns from the ground truth.

    Args:
        sam_logits, tiny_logits: (B, C, H, W) on the same grid. masks: (B, C, H, W) {0, 1}.
        kl_mask: (B,) bool, the samples whose KL terms count (``batch_topk``); None: all.

    Returns:
        the scalar total and its four parts (KL parts averaged over the selected samples; 0 if none).
    """
    gt_s, gt_t = gt_loss(sam_logits, masks, pos_weight).mean(), gt_loss(tiny_logits, masks, pos_weight).mean()
    teacher = sam_logits if mutual else sam_logits.detach()
    kl_st = bernoulli_kl(teacher, tiny_logits, temperature)
    kl_ts = bernoulli_kl(tiny_logits, teacher, temperature)
    if kl_mask is not None:
        weight = kl_mask.to(kl_st.dtype)
        denom = weight.sum().clamp_min(1.0)
        kl_st, kl_ts = (kl_st * weight).sum() / denom, (kl_ts * weight).sum() / denom
    else:
        kl_st, kl_ts = kl_st.mean(), kl_ts.mean()
    total = w_gt * (gt_s + gt_t) + w_kl * (kl_st + kl_ts)
    return DistillLoss(total, gt_s.detach(), gt_t.detach(), kl_st.detach(), kl_ts.detach())
