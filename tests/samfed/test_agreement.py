"""The agreement mask on hand-made probability maps, and the adaptive threshold."""

from __future__ import annotations

import pytest
import torch

from dsfed.samfed.agreement import (
    agreement_targets,
    confidence_histogram,
    histogram_quantile,
    next_threshold,
    sam_targets,
    self_targets,
)


def _maps(teacher: list[float], partner: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 1, 1, N) maps from two lists of pixel probabilities."""
    return torch.tensor(teacher).view(1, 1, 1, -1), torch.tensor(partner).view(1, 1, 1, -1)


def test_agree_confident_disagree_and_ignore() -> None:
    # pixels: agree fg, agree bg, teacher wins a confident disagreement, partner wins one, unsure disagreement,
    # same side but one not past tau (a disagreement the confident one wins)
    p_t, p_p = _maps([0.95, 0.02, 0.99, 0.30, 0.60, 0.90], [0.90, 0.10, 0.20, 0.01, 0.45, 0.70])
    target, weight = agreement_targets(p_t, p_p, tau=0.85)
    assert target.flatten().tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    expected = [1.0, 1.0, 0.98, 0.98, 0.0, 0.80]
    assert weight.flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_without_arbitration_every_disagreement_is_ignored() -> None:
    p_t, p_p = _maps([0.95, 0.99, 0.30], [0.90, 0.20, 0.01])
    target, weight = agreement_targets(p_t, p_p, tau=0.85, arbitration=False)
    assert weight.flatten().tolist() == [1.0, 0.0, 0.0]
    assert target.flatten()[0] == 1.0


def test_a_higher_threshold_keeps_fewer_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    p_t, p_p = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    kept = [float((agreement_targets(p_t, p_p, tau)[1] > 0).float().mean()) for tau in (0.6, 0.75, 0.9)]
    assert kept[0] > kept[1] > kept[2] > 0


def test_shapes_and_bad_tau_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        agreement_targets(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5), 0.85)
    with pytest.raises(ValueError, match="tau"):
        agreement_targets(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), 0.5)


def test_sam_and_self_targets() -> None:
    p = torch.tensor([0.97, 0.6, 0.3, 0.02]).view(1, 1, 1, -1)
    target, weight = sam_targets(p)
    assert target.flatten().tolist() == [1.0, 1.0, 0.0, 0.0] and weight.flatten().tolist() == [1.0] * 4
    target, weight = self_targets(p, tau=0.95)
    assert weight.flatten().tolist() == [1.0, 0.0, 0.0, 1.0]


def test_threshold_follows_the_partners_confidence_and_is_clipped() -> None:
    unsure = torch.full((1, 1, 8, 8), 0.6)  # confidence max(p, 1-p) = 0.6 everywhere
    sure = torch.cat([torch.full((1, 1, 8, 4), 0.99), torch.full((1, 1, 8, 4), 0.08)], dim=-1)  # 0.99 and 0.92
    assert next_threshold(confidence_histogram(unsure), 0.85, 0.5, 0.75, 0.95) == 0.75  # clipped up
    assert next_threshold(confidence_histogram(sure), 0.85, 0.5, 0.75, 0.95) == pytest.approx(0.92, abs=1e-3)
    assert next_threshold(confidence_histogram(sure), 0.85, 0.9, 0.75, 0.95) == 0.95  # clipped down
    empty = torch.zeros(1000, dtype=torch.float64)
    assert next_threshold(empty, 0.85, 0.5, 0.75, 0.95) == 0.85


def test_histograms_add_up_over_batches() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 1, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)
    assert torch.equal(confidence_histogram(a) + confidence_histogram(b), confidence_histogram(torch.cat([a, b])))
    top = torch.maximum(torch.cat([a, b]), 1 - torch.cat([a, b])).flatten()
    assert histogram_quantile(confidence_histogram(torch.cat([a, b])), 0.5) == pytest.approx(float(top.median()), abs=2e-3)
