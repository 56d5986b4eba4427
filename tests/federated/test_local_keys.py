"""FedBN-style local keys: never serialised, never averaged, each client keeps its own values."""

from __future__ import annotations

import pytest
import torch

import dsfed.federated.engines.host as host_module
import dsfed.federated.federation as federation_module
from dsfed.federated import FedAvg, Ledger, LocalKeys, RoundsConfig, run_rounds, to_bytes
from tests.federated.toy import BN_LOCAL, federation_of, initial_weights, toy_clients, toy_model


def test_split_and_merge() -> None:
    keys = LocalKeys([r"(^|\.)bn\d*\.", r"running_"])
    weights = {"conv.weight": 1, "bn1.weight": 2, "block.bn.bias": 3, "head.running_mean": 4, "head.bias": 5}
    shared, local = keys.split(weights)
    assert shared == {"conv.weight": 1, "head.bias": 5}
    assert local == {"bn1.weight": 2, "block.bn.bias": 3, "head.running_mean": 4}
    assert keys.merge(shared, local) == weights
    with pytest.raises(ValueError, match="local keys in the shared part"):
        keys.merge(weights, {})
    assert LocalKeys().split(weights) == (weights, {}) and not LocalKeys()


def test_local_keys_never_travel_and_each_client_keeps_its_own(tmp_path, monkeypatch) -> None:
    payloads: list[set[str]] = []

    def spy(weights):
        payloads.append(set(weights))
        return to_bytes(weights)

    monkeypatch.setattr(host_module, "to_bytes", spy)  # what clients send
    monkeypatch.setattr(federation_module, "to_bytes", spy)  # what the server sends
    clients = toy_clients(3, local_keys=BN_LOCAL)
    full = clients[2].model.state_dict
    clients[2].get_weights = lambda: {k: v.clone() for k, v in full().items()}  # a careless client sends everything
    aggregated: list[set[str]] = []

    class SpyAvg(FedAvg):
        def aggregate(self, round, global_weights, results, group="global"):  # noqa: A002
            aggregated.extend(set(r.weights) for _, r in results)
            return super().aggregate(round, global_weights, results, group)

    ledger = Ledger(tmp_path / "ledger.csv")
    result = run_rounds(federation_of(clients, ledger=ledger), SpyAvg(), initial_weights(), RoundsConfig(rounds=2), local_keys=BN_LOCAL, progress=False)

    local = {k for k in toy_model().state_dict() if BN_LOCAL.is_local(k)}
    assert local == {"1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert payloads and all(not (p & local) for p in payloads)
    assert aggregated and all(not (a & local) for a in aggregated)
    assert all(not (r & local) for c in clients for r in c.received)
    assert not set(result.weights) & local
    shared_size = len(to_bytes(BN_LOCAL.shared(initial_weights())))
    assert {r["bytes"] for r in ledger.rows()} == {shared_size}
    assert shared_size < len(to_bytes(initial_weights()))

    means = [c.model.state_dict()["1.running_mean"] for c in clients]
    assert not torch.equal(means[0], means[1]) and not torch.equal(means[1], means[2])
    assert all(not torch.equal(m, torch.zeros(8)) for m in means)
    # the shared part is identical across clients after loading the final global weights
    for c in clients:
        c._load(result.weights)
    assert torch.equal(clients[0].model.state_dict()["0.weight"], clients[2].model.state_dict()["0.weight"])
    assert not torch.equal(clients[0].model.state_dict()["1.weight"], clients[1].model.state_dict()["1.weight"])
