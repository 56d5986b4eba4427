"""Distillation core: the learnability score by hand, pool sampling frequencies, batch_topk, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dsfed.distill.loss import mutual_distillation_loss
from dsfed.distill.scores import bernoulli_kl, gt_loss, learnability_scores, symmetric_kl
from dsfed.distill.selection import batch_topk, pool_size, sample_pool


def _map(value: float) -> torch.Tensor:
    return torch.full((1, 1, 1, 1), value)


def test_score_matches_a_hand_computation() -> None:
    # SAM logit 0 (p = 1/2), TinySAM logit ln 3 (q = 3/4), ground truth 1, pos_weight 2, lam 1/2
    sam, tiny, mask = _map(0.0), _map(math.log(3.0)), _map(1.0)
    bce = -2.0 * math.log(0.5)
    kl_pq = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    kl_qp = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert gt_loss(sam, mask).item() == pytest.approx(bce)
    assert bernoulli_kl(sam, tiny).item() == pytest.approx(kl_pq)
    assert bernoulli_kl(tiny, sam).item() == pytest.approx(kl_qp)
    score = learnability_scores(sam, tiny, mask, lam=0.5)
    assert score.shape == (1,) and score.item() == pytest.approx(0.5 * -bce + 0.5 * (kl_pq + kl_qp))
    assert learnability_scores(sam, tiny, mask, lam=1.0).item() == pytest.approx(-bce)
    # pixel-averaged: two pixels, one of them identical predictions (KL 0) and ground truth 0
    sam2 = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)
    tiny2 = torch.tensor([math.log(3.0), 2.0]).view(1, 1, 1, 2)
    assert symmetric_kl(sam2, tiny2).item() == pytest.approx((kl_pq + kl_qp) / 2)


def test_kl_is_zero_for_equal_maps_and_stable_for_large_logits() -> None:
    x = torch.randn(3, 2, 4, 4) * 30
    assert torch.allclose(bernoulli_kl(x, x), torch.zeros(3), atol=1e-6)
    assert torch.isfinite(symmetric_kl(x, -x)).all() and (symmetric_kl(x, -x) > 0).all()


def test_pool_frequencies_follow_exp_scores() -> None:
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0])
    gen = torch.Generator().manual_seed(0)
    draws = 20_000
    counts = torch.zeros(4)
    for _ in range(draws):
        counts[sample_pool(scores, rate=0.25, tau=1.0, generator=gen)] += 1
    expected = torch.exp(scores) / torch.exp(scores).sum()
    assert torch.allclose(counts / draws, expected, atol=0.01)
    # tau scales the scores: tau = 2 gives exp(s / 2) weights
    counts.zero_()
    for _ in range(draws):
        counts[sample_pool(scores, rate=0.25, tau=2.0, generator=gen)] += 1
    assert torch.allclose(counts / draws, torch.exp(scores / 2) / torch.exp(scores / 2).sum(), atol=0.01)


def test_pool_is_distinct_and_sized_by_rate() -> None:
    scores = torch.randn(50)
    pool = sample_pool(scores, rate=0.4, generator=torch.Generator().manual_seed(1))
    assert len(pool) == 20 == pool_size(50, 0.4) and len(set(pool.tolist())) == 20
    assert sorted(sample_pool(scores, rate=1.0).tolist()) == list(range(50))
    with pytest.raises(ValueError):
        sample_pool(scores, rate=0.0)


def test_batch_topk_keeps_reliable_then_most_disagreeing() -> None:
    gt_sam = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    gt_tiny = torch.tensor([0.6, 0.1, 0.2, 0.3, 0.4, 0.5])
    sym_kl = torch.tensor([9.0, 0.3, 0.1, 0.2, 8.0, 7.0])
    # 0.7-quantile of 0.1..0.6 (linear) = 0.45: SAM-reliable {0,1,2,3}, TinySAM-reliable {1,2,3,4};
    # both {1,2,3}; top half (ceil 1.5 = 2) by KL: 1 (0.3) and 3 (0.2)
    assert batch_topk(gt_sam, gt_tiny, sym_kl).tolist() == [False, True, False, True, False, False]


class _Net(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize("mutual", [True, False])
def test_kl_gradients_reach_both_models_when_mutual(mutual: bool) -> None:
    sam, tiny = _Net(0), _Net(1)
    images, masks = torch.randn(4, 3, 8, 8), (torch.rand(4, 2, 8, 8) > 0.5).float()
    loss = mutual_distillation_loss(sam(images), tiny(images), masks, w_gt=0.0, w_kl=1.0, mutual=mutual)
    loss.total.backward()
    tiny_grad = tiny.conv.weight.grad
    sam_grad = sam.conv.weight.grad
    assert tiny_grad is not None and tiny_grad.abs().sum() > 0
    if mutual:
        assert sam_grad is not None and sam_grad.abs().sum() > 0
    else:
        assert sam_grad is None or sam_grad.abs().sum() == 0
    assert loss.kl_sam_tiny > 0 and loss.kl_tiny_sam > 0


def test_each_kl_direction_differentiates_both_arguments() -> None:
    a = torch.randn(2, 1, 4, 4, requires_grad=True)
    b = torch.randn(2, 1, 4, 4, requires_grad=True)
    for direction in (bernoulli_kl(a, b), bernoulli_kl(b, a)):
        ga, gb = torch.autograd.grad(direction.sum(), (a, b))
        assert ga.abs().sum() > 0 and gb.abs().sum() > 0


def test_kl_mask_restricts_the_kl_terms() -> None:
    sam, tiny = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    masks = torch.zeros(3, 1, 4, 4)
    only_first = mutual_distillation_loss(sam, tiny, masks, kl_mask=torch.tensor([True, False, False]))
    assert only_first.kl_sam_tiny.item() == pytest.approx(bernoulli_kl(sam[:1], tiny[:1]).item())
    none = mutual_distillation_loss(sam, tiny, masks, kl_mask=torch.zeros(3, dtype=torch.bool))
    assert none.kl_sam_tiny.item() == 0 and none.total.item() == pytest.approx((none.gt_sam + none.gt_tiny).item())
