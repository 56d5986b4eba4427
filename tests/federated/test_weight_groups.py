"""Named weight groups: clients of different architectures in one run, each averaged only with its own kind."""

from __future__ import annotations

import pytest
import torch

from dsfed.federated import FedAvg, RoundsConfig, build_strategy, run_rounds
from dsfed.federated.checkpoint import latest_checkpoint
from tests.federated.toy import ToyClient, federation_of, toy_model


def _clients() -> list[ToyClient]:
    return [ToyClient("a", seed=0), ToyClient("b", n=20, seed=1), ToyClient("c", seed=2, hidden=16), ToyClient("d", n=12, seed=3, hidden=16)]


MEMBERSHIP = {"a": "narrow", "b": "narrow", "c": "wide", "d": "wide"}


def _initial() -> dict[str, dict[str, torch.Tensor]]:
    return {"narrow": dict(toy_model(8).state_dict()), "wide": dict(toy_model(16).state_dict())}


def test_groups_are_aggregated_apart_and_never_mixed(tmp_path) -> None:
    seen: list[tuple[str, list[str]]] = []

    class Spy(FedAvg):
        def aggregate(self, round, global_weights, results, group="global"):  # noqa: A002
            seen.append((group, sorted(n for n, _ in results)))
            return super().aggregate(round, global_weights, results, group)

    clients = _clients()
    result = run_rounds(federation_of(clients, "g"), Spy(), _initial(), RoundsConfig(rounds=2), membership=MEMBERSHIP, progress=False,
                        checkpoints=tmp_path / "ck")
    assert seen == [("narrow", ["a", "b"]), ("wide", ["c", "d"])] * 2
    assert result.groups["narrow"]["0.weight"].shape == (8, 4) and result.groups["wide"]["0.weight"].shape == (16, 4)
    # each group is exactly the sample-weighted mean of its own members' last updates
    for group, members in (("narrow", clients[:2]), ("wide", clients[2:])):
        n = [len(c.x) for c in members]
        expected = sum(c.model.state_dict()["0.weight"].double() * k for c, k in zip(members, n)) / sum(n)
        assert torch.allclose(result.groups[group]["0.weight"].double(), expected)
    with pytest.raises(Exception, match="2 weight groups"):
        result.weights  # noqa: B018 - several groups: no single "the" weights
    ckpt = latest_checkpoint(tmp_path / "ck")
    assert ckpt.groups == ["narrow", "wide"] and ckpt.clients == MEMBERSHIP
    assert {g: w["0.weight"].shape for g, w in ckpt.load_groups().items()} == {"narrow": (8, 4), "wide": (16, 4)}


def test_fedadam_keeps_moments_per_group_and_a_misfiled_client_stops_the_run() -> None:
    strategy = build_strategy("fedadam")
    result = run_rounds(federation_of(_clients()), strategy, _initial(), RoundsConfig(rounds=1), membership=MEMBERSHIP, progress=False)
    assert set(strategy.state_dict()["m"]) == {"narrow", "wide"} and set(result.groups) == {"narrow", "wide"}
    wrong = {**MEMBERSHIP, "c": "narrow"}  # a wide model filed under the narrow group: a configuration bug, which stops the run
    with pytest.raises(RuntimeError, match="size mismatch"):
        run_rounds(federation_of(_clients()), FedAvg(), _initial(), RoundsConfig(rounds=1, min_clients=1), membership=wrong, progress=False)
    with pytest.raises(Exception, match="need a membership"):
        run_rounds(federation_of(_clients()), FedAvg(), _initial(), RoundsConfig(rounds=1), progress=False)
