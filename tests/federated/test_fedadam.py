"""FedAdam: one and two server steps against hand-computed values; its state survives a checkpoint."""

from __future__ import annotations

import io
import math

import pytest
import torch

from dsfed.federated import FedAdam, FitResult, build_strategy


def _one(weights: dict[str, torch.Tensor], n: int = 1) -> list[tuple[str, FitResult]]:
    return [("a", FitResult(weights, n, {}))]


def _adam(g: float, targets: list[float], eta=1e-2, b1=0.9, b2=0.99, tau=1e-3) -> list[float]:
    m = v = 0.0
    out = []
    for t in targets:
        delta = t - g
        m = b1 * m + (1 - b1) * delta
        v = b2 * v + (1 - b2) * delta * delta
        g = g + eta * m / (math.sqrt(v) + tau)
        out.append(g)
    return out


def test_one_step_by_hand() -> None:
    strategy = build_strategy("fedadam")
    g = {"w": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    strategy.initialize({"global": g})
    out = strategy.aggregate(1, g, _one({"w": torch.tensor([2.0, 1.0], dtype=torch.float64)}))
    # delta = [1, -1]; m = 0.1 delta; v = 0.01 delta^2; step = 0.01 * 0.1 / (0.1 + 0.001)
    step = 0.01 * 0.1 / (0.1 + 0.001)
    assert out["w"].tolist() == pytest.approx([1.0 + step, 2.0 - step], abs=1e-15)


def test_two_steps_by_hand_with_weighted_clients_and_float32() -> None:
    strategy = FedAdam(eta=0.1, beta1=0.8, beta2=0.9, tau=1e-2)
    g = {"w": torch.tensor([0.5]), "steps": torch.tensor(4)}
    strategy.initialize({"global": g})
    # round 1: clients at 1.0 (n=1) and 4.0 (n=2) -> mean 3.0; round 2: both at -1.0
    r1 = [("a", FitResult({"w": torch.tensor([1.0]), "steps": torch.tensor(5)}, 1, {})), ("b", FitResult({"w": torch.tensor([4.0]), "steps": torch.tensor(9)}, 2, {}))]
    g1 = strategy.aggregate(1, g, r1)
    g2 = strategy.aggregate(2, g1, _one({"w": torch.tensor([-1.0]), "steps": torch.tensor(11)}))
    expected = _adam(0.5, [3.0, -1.0], eta=0.1, b1=0.8, b2=0.9, tau=1e-2)
    assert g1["w"].dtype == torch.float32 and g1["w"].item() == pytest.approx(expected[0], rel=1e-6)
    assert g2["w"].item() == pytest.approx(expected[1], rel=1e-6)
    assert g1["steps"].item() == 9 and g2["steps"].item() == 11  # integer buffers are not optimised


def test_state_round_trips_through_state_dict() -> None:
    g0 = {"w": torch.randn(5, generator=torch.Generator().manual_seed(0)), "n": torch.tensor(1)}
    targets = [{"w": torch.full((5,), float(i)), "n": torch.tensor(i)} for i in range(1, 4)]

    straight = FedAdam()
    straight.initialize({"global": g0})
    g = g0
    for i, t in enumerate(targets, 1):
        g = straight.aggregate(i, g, _one(t))

    first = FedAdam()
    first.initialize({"global": g0})
    g1 = first.aggregate(1, g0, _one(targets[0]))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = FedAdam()
    second.load_state_dict(torch.load(buffer, weights_only=True))
    assert second.state_dict()["step"] == 1 and torch.equal(second.state_dict()["m"]["global"]["w"], first.state_dict()["m"]["global"]["w"])
    resumed = second.aggregate(3, second.aggregate(2, g1, _one(targets[1])), _one(targets[2]))
    assert torch.equal(resumed["w"], g["w"]) and torch.equal(resumed["n"], g["n"])
