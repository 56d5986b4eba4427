"""FedProx: mu reaches the clients, the proximal term's value and gradient, FedAvg on the server."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from dsfed.federated import FedAvg, FedProx, FitResult, RoundsConfig, build_strategy, proximal_term, run_rounds
from tests.federated.toy import ToyClient, federation_of, initial_weights


def test_proximal_term_value_and_gradient() -> None:
    layer = nn.Linear(2, 1).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
        layer.bias.copy_(torch.tensor([3.0]))
    global_params = {"weight": torch.tensor([[0.0, 1.0]], dtype=torch.float64), "bias": torch.tensor([1.0], dtype=torch.float64)}
    term = proximal_term(layer.named_parameters(), global_params, mu=0.5)
    assert term.item() == pytest.approx(0.25 * (1 + 1 + 4))  # mu/2 * ||w - w_g||^2
    term.backward()
    assert torch.allclose(layer.weight.grad, 0.5 * (layer.weight.detach() - global_params["weight"]))
    assert torch.allclose(layer.bias.grad, 0.5 * (layer.bias.detach() - global_params["bias"]))
    assert proximal_term(dict(layer.named_parameters()), global_params, mu=0.0).item() == 0.0


def test_proximal_term_skips_local_keys_but_refuses_a_total_mismatch() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    shared = {k: v.detach() + 1 for k, v in model.named_parameters() if k.startswith("0.")}
    assert proximal_term(model.named_parameters(), shared, mu=2.0).item() == pytest.approx(float(sum(v.numel() for v in shared.values())))
    with pytest.raises(ValueError, match="none of the model's parameters"):
        proximal_term(model.named_parameters(), {"module.0.weight": torch.zeros(2, 2)}, mu=1.0)


class _Recorder(ToyClient):
    configs: list[dict[str, Any]]

    def train(self, weights, round, config):  # noqa: A002 - the protocol's name
        self.configs = [*getattr(self, "configs", []), config]
        return super().train(weights, round, config)


def test_mu_reaches_the_clients_and_the_server_side_is_fedavg() -> None:
    strategy = build_strategy("fedprox", mu=0.1)
    assert isinstance(strategy, FedProx) and strategy.configure_fit(3) == {"prox_mu": 0.1}
    clients = [_Recorder("a", seed=0), _Recorder("b", n=16, seed=1)]
    run_rounds(federation_of(clients), strategy, initial_weights(), RoundsConfig(rounds=2), progress=False)
    assert all(c.configs == [{"prox_mu": 0.1}, {"prox_mu": 0.1}] for c in clients)
    results = [("a", FitResult({"w": torch.tensor([1.0])}, 1, {})), ("b", FitResult({"w": torch.tensor([4.0])}, 2, {}))]
    assert torch.equal(FedProx(0.3).aggregate(1, {}, results)["w"], FedAvg().aggregate(1, {}, results)["w"])
    with pytest.raises(Exception, match="mu must be >= 0"):
        build_strategy("fedprox", mu=-1)
