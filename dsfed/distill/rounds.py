"""One round of learnability-guided mutual distillation: score every sample, pick the pool, train both.

The round is DSFedMed's: scores from the current models, a fresh pool each round, one pass over it in
batches, both models stepping on the same loss (``mutual``) or SAM only teaching.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from dsfed.distill.loss import mutual_distillation_loss
from dsfed.distill.scores import gt_loss, learnability_scores, symmetric_kl
from dsfed.distill.selection import SELECTIONS, batch_topk, sample_pool

__all__ = ["DistillSettings", "RoundResult", "distill_round", "embed_images", "frozen_encoder", "score_samples"]


@dataclass(frozen=True)
class DistillSettings:
    """The knobs of a round (the ``distill`` params section mirrors these).

    ``selection``: ``pool`` (exp-weighted pool of ``rate`` * N per round, DSFedMed), ``batch_topk`` (the
    released code's per-batch rule over all samples), ``all`` (no selection: the Table 4 ablation).
    """

    lam: float = 0.5
    temperature: float = 1.0
    tau: float = 1.0
    rate: float = 0.5
    selection: str = "pool"
    mutual: bool = True
    w_gt: float = 1.0
    w_kl: float = 1.0
    batch_size: int = 4
    pos_weight: float = 2.0
    quantile: float = 0.7
    keep: float = 0.5

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection {self.selection!r}: choose one of {', '.join(SELECTIONS)}")


@dataclass
class RoundResult:
    """What a round did: per-sample ``scores`` (N,) before training, the ``pool`` (k,) it trained on, and
    the mean of each loss part over its batches."""

    scores: Tensor
    pool: Tensor
    losses: dict[str, float] = field(default_factory=dict)


def _as_float(images: Tensor) -> Tensor:
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def frozen_encoder(sam: nn.Module) -> bool:
    """Whether ``sam`` is a SAM-family segmenter whose image encoder does not train (its embeddings can be cached)."""
    encoder = getattr(getattr(sam, "sam", None), "image_encoder", None)
    return encoder is not None and hasattr(sam, "forward_embeddings") and not any(p.requires_grad for p in encoder.parameters())


@torch.no_grad()
def embed_images(sam: nn.Module, images: Tensor, batch: int, device: torch.device | str = "cpu") -> Tensor:
    """SAM's image embeddings of every image, once (its encoder frozen: they never change).

    Args:
        sam: a :class:`~dsfed.models.sam.SamSegmenter`. images: (N, 3, S, S) uint8 or float in [0, 1].

    Returns:
        (N, 256, s/16, s/16) float32 on the CPU, s = ``sam.input_size`` (1024 px: 4 MB an image).
    """
    from dsfed.models.segmenter import resize

    training, side = sam.training, int(sam.input_size)  # type: ignore[arg-type]
    sam.eval()
    out = [sam.embed(resize(_as_float(images[lo : lo + batch]).to(device), side)).float().cpu()  # type: ignore[operator]
           for lo in range(0, len(images), batch)]
    sam.train(training)
    return torch.cat(out) if out else torch.zeros(0)


def _sam_logits(sam: nn.Module, x: Tensor, embeddings: Tensor | None, idx: Tensor | slice, device: torch.device) -> Tensor:
    """SAM's logits (B, C, Sm, Sm) of the batch: from its cached embeddings when given, else from the images ``x``."""
    if embeddings is None:
        return sam(x, None)
    return sam.forward_embeddings(embeddings[idx].to(device))  # type: ignore[operator]


@torch.no_grad()
def score_samples(
    sam: nn.Module, tiny: nn.Module, images: Tensor, masks: Tensor, settings: DistillSettings, device: torch.device,
    sam_embeddings: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per-sample ``scores``, ``gt_sam``, ``gt_tiny``, ``sym_kl`` (each (N,), on the CPU) with both models in eval mode.

    Args:
        images: (N, 3, S, S) uint8 or float in [0, 1]. masks: (N, C, Sm, Sm) {0, 1}; both models' logits
            are (N, C, Sm, Sm).
        sam_embeddings: (N, 256, h, w) from :func:`embed_images` (SAM's encoder frozen), or None.
    """
    sam.eval()
    tiny.eval()
    parts: dict[str, list[Tensor]] = {"scores": [], "gt_sam": [], "gt_tiny": [], "sym_kl": []}
    for lo in range(0, len(images), settings.batch_size * 4):
        span = slice(lo, lo + settings.batch_size * 4)
        x = _as_float(images[span]).to(device)
        m = masks[span].to(device).float()
        s_logits, t_logits = _sam_logits(sam, x, sam_embeddings, span, device).float(), tiny(x, None).float()
        parts["scores"].append(learnability_scores(s_logits, t_logits, m, settings.lam, settings.temperature, settings.pos_weight).cpu())
        parts["gt_sam"].append(gt_loss(s_logits, m, settings.pos_weight).cpu())
        parts["gt_tiny"].append(gt_loss(t_logits, m, settings.pos_weight).cpu())
        parts["sym_kl"].append(symmetric_kl(s_logits, t_logits, settings.temperature).cpu())
    return {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items()}


def distill_round(
    sam: nn.Module,
    tiny: nn.Module,
    sam_optimizer: torch.optim.Optimizer | None,
    tiny_optimizer: torch.optim.Optimizer,
    images: Tensor,
    masks: Tensor,
    settings: DistillSettings,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    sam_embeddings: Tensor | None = None,
) -> RoundResult:
    """Score all N samples, select this round's pool, and train on it for one pass.

    ``sam_optimizer`` None keeps SAM fixed (e.g. a frozen teacher); otherwise SAM steps on the same loss,
    which with ``settings.mutual`` includes learning from TinySAM.

    Args:
        images: (N, 3, S, S) uint8 or float [0, 1]; masks (N, C, Sm, Sm) {0, 1} (the synthetic sets).
        generator: drives the pool draw and the batch order (a round is reproducible from it).
        sam_embeddings: SAM's cached image embeddings (:func:`embed_images`; its encoder frozen), or None.
    """
    device = torch.device(device)
    scored = score_samples(sam, tiny, images, masks, settings, device, sam_embeddings)
    scores = scored["scores"]
    if settings.selection == "pool":
        pool = sample_pool(scores, settings.rate, settings.tau, generator)
    else:
        pool = torch.arange(len(images))
    order = pool[torch.randperm(len(pool), generator=generator)]
    sam.train(sam_optimizer is not None)
    tiny.train()
    sums: dict[str, float] = {}
    batches = 0
    for lo in range(0, len(order), settings.batch_size):
        idx = order[lo : lo + settings.batch_size]
        x, m = _as_float(images[idx]).to(device), masks[idx].to(device).float()
        s_logits, t_logits = _sam_logits(sam, x, sam_embeddings, idx, device).float(), tiny(x, None).float()
        kl_mask = None
        if settings.selection == "batch_topk":
            with torch.no_grad():
                kl_mask = batch_topk(gt_loss(s_logits, m, settings.pos_weight), gt_loss(t_logits, m, settings.pos_weight),
                                     symmetric_kl(s_logits, t_logits, settings.temperature), settings.quantile, settings.keep)
        loss = mutual_distillation_loss(s_logits, t_logits, m, settings.w_gt, settings.w_kl, settings.temperature,
                                        settings.mutual, kl_mask, settings.pos_weight)
        for opt in (sam_optimizer, tiny_optimizer):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
        loss.total.backward()
        for opt in (sam_optimizer, tiny_optimizer):
            if opt is not None:
                opt.step()
        parts = {"total": loss.total.detach(), "gt_sam": loss.gt_sam, "gt_tiny": loss.gt_tiny,
                 "kl_sam_tiny": loss.kl_sam_tiny, "kl_tiny_sam": loss.kl_tiny_sam}
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + float(value)
        batches += 1
    return RoundResult(scores=scores, pool=pool, losses={k: v / max(batches, 1) for k, v in sums.items()})
