"""The engine seam: tasks and replies, client failures versus bugs, client-held state, the ledger of evaluation."""

from __future__ import annotations

import pytest
import torch

from dsfed.federated import ClientFailure, FedAvg, FederatedError, Ledger, RoundsConfig, run_rounds
from dsfed.federated.engines import Engine, EvaluateTask, FitTask, InProcessEngine
from dsfed.federated.serialize import from_bytes, to_bytes
from tests.federated.toy import BN_LOCAL, federation_of, initial_weights, toy_clients


def test_in_process_engine_speaks_the_protocol(tmp_path) -> None:
    clients = toy_clients(2, local_keys=BN_LOCAL)
    engine = InProcessEngine(clients, state_root=tmp_path, holdout=["site_b"])
    assert isinstance(engine, Engine) and engine.clients == ["site_a", "site_b"]
    info = engine.query(["site_a", "site_b"], "run1")
    assert info["site_a"].samples == {"train": 16, "val": 16} and info["site_a"].fingerprint == "toy-site_a"
    assert info["site_a"].trainable and not info["site_b"].trainable and info["site_a"].state_rounds == []

    payload = to_bytes(BN_LOCAL.shared(initial_weights()))
    reply = engine.fit({"site_a": FitTask("run1", 1, payload, {}, committed=0, local_keys=tuple(BN_LOCAL.patterns))})["site_a"]
    assert reply.ok and reply.num_samples == 16 and "loss" in reply.metrics
    sent = from_bytes(reply.payload)
    assert sent.keys() == BN_LOCAL.shared(initial_weights()).keys()  # the BatchNorm keys stayed at the client
    assert engine.query(["site_a"], "run1")["site_a"].state_rounds == [1]
    assert (tmp_path / "site_a" / "run1" / "round-0001.pt").is_file()
    scored = engine.evaluate({"site_a": EvaluateTask("run1", reply.payload, "val")})["site_a"]
    assert scored.ok and scored.num_samples == 16 and scored.metrics["mse"] > 0
    with pytest.raises(FederatedError, match="site_b is held out"):
        engine.fit({"site_b": FitTask("run1", 1, payload)})


class _Buggy:
    """A toy client whose train() has a bug (a TypeError), or fails as a site does (a ClientFailure)."""

    def __init__(self, client, exc: Exception) -> None:
        self.client, self.exc = client, exc
        self.name = client.name

    def __getattr__(self, item):
        return getattr(self.client, item)

    def train(self, weights, round, config):  # noqa: A002
        raise self.exc


def test_a_failing_client_is_left_out_but_a_bug_stops_the_run() -> None:
    clients = toy_clients(3)
    clients[1] = _Buggy(clients[1], ClientFailure("site_b: store unreadable"))
    result = run_rounds(federation_of(clients), FedAvg(), initial_weights(), RoundsConfig(rounds=1, min_clients=2), progress=False)
    assert result.history[0].failed == {"site_b": "ClientFailure: site_b: store unreadable"}

    clients = toy_clients(3)
    clients[1] = _Buggy(clients[1], TypeError("unsupported operand type(s) for +: 'int' and 'str'"))
    with pytest.raises(TypeError, match="unsupported operand"):
        run_rounds(federation_of(clients), FedAvg(), initial_weights(), RoundsConfig(rounds=1, min_clients=1), progress=False)


def test_a_bug_in_the_loop_is_not_a_dropped_client() -> None:
    class Broken(FedAvg):
        def aggregate(self, round, global_weights, results, group="global"):  # noqa: A002
            raise KeyError("bug in aggregation")

    with pytest.raises(KeyError, match="bug in aggregation"):
        run_rounds(federation_of(toy_clients(3)), Broken(), initial_weights(), RoundsConfig(rounds=1), progress=False)


def test_evaluation_goes_through_the_ledger(tmp_path) -> None:
    ledger = Ledger(tmp_path / "ledger.csv")
    federation = federation_of(toy_clients(2), "run", ledger)
    weights = initial_weights()
    replies = federation.evaluate(3, weights, "val", ["site_a", "site_b"])
    assert all(r.ok for r in replies.values())
    rows = [(r["round"], r["client"], r["direction"], r["what"]) for r in ledger.rows()]
    assert rows == [(3, "site_a", "down", "val_weights"), (3, "site_b", "down", "val_weights"),
                    (3, "site_a", "up", "val_metrics"), (3, "site_b", "up", "val_metrics")]
    assert ledger.rows()[0]["bytes"] == len(to_bytes(weights))


def test_each_client_keeps_its_own_state_and_restores_it(tmp_path) -> None:
    """A client restarted (a new object, as after a crash) trains on from its own saved state, not the server's."""
    torch.manual_seed(0)
    run = lambda clients: run_rounds(  # noqa: E731
        federation_of(clients, "r", state_root=tmp_path / "states"), FedAvg(), initial_weights(), RoundsConfig(rounds=2), progress=False,
        checkpoints=tmp_path / "server", local_keys=BN_LOCAL,
    )
    first = toy_clients(2, local_keys=BN_LOCAL)
    run(first)
    server = sorted(p.name for p in (tmp_path / "server" / "round-0002").iterdir())
    assert server == ["meta.json", "rng.pt", "strategy.pt", "weights"]  # no client state on the server
    assert [p.name for p in (tmp_path / "server" / "round-0002" / "weights").iterdir()] == ["global.safetensors"]
    assert sorted(p.name for p in (tmp_path / "states" / "site_a" / "r").iterdir()) == ["round-0001.pt", "round-0002.pt"]
    # a lost client state is noticed on resume, with the client named
    (tmp_path / "states" / "site_b" / "r" / "round-0002.pt").unlink()
    (tmp_path / "states" / "site_b" / "r" / "round-0001.pt").unlink()
    from dsfed.federated import CheckpointError

    with pytest.raises(CheckpointError, match="client site_b trained in round 2 but holds no state"):
        run(toy_clients(2, local_keys=BN_LOCAL))


def test_local_optimizer_state_keep_or_reset(tmp_path) -> None:
    from dsfed.federated.clients import LocalTraining

    assert LocalTraining().optimizer_state == "keep"
    with pytest.raises(ValueError):
        from dsfed.config import LocalSection

        LocalSection(optimizer_state="forget")


def test_registries_are_the_single_source_of_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Config validation reads the registries (torch-free); every registered name builds."""
    from dsfed.config import MethodConfig
    from dsfed.federated.registry import CLIENT_ALGORITHMS, ENGINES, STRATEGIES, resolve
    from dsfed.federated.strategies import build_strategy

    assert all(build_strategy(name).name == name for name in STRATEGIES)
    assert resolve(ENGINES, "inprocess", "engine") is InProcessEngine and all(callable(resolve(CLIENT_ALGORITHMS, n, "client")) for n in CLIENT_ALGORITHMS)
    with pytest.raises(ValueError, match="unknown client algorithm 'semi'"):
        MethodConfig(model="unet", client="semi")
    with pytest.raises(ValueError, match="unknown strategy 'fedsgd'"):
        MethodConfig(model="unet", strategy="fedsgd")
    monkeypatch.setitem(CLIENT_ALGORITHMS, "semi", "tests.federated.toy:ToyClient")
    assert MethodConfig(model="unet", client="semi").client == "semi"  # registering is all it takes


def test_training_does_not_depend_on_the_process_global_generators(tmp_path) -> None:
    """A fresh Flower node starts its global generators wherever its imports left them; the toy's dropout and
    jitter draw from torch's, numpy's and Python's. The host seeds them per (seed, client, round), so the
    same task gives the same weights in any process, and restores them afterwards."""
    import random

    import numpy as np

    payload = to_bytes(BN_LOCAL.shared(initial_weights()))
    task = {"site_a": FitTask("run1", 1, payload, {}, committed=0, local_keys=tuple(BN_LOCAL.patterns))}
    replies = []
    for i, process_seed in enumerate((1, 987654)):
        torch.manual_seed(process_seed)
        np.random.seed(process_seed)
        random.seed(process_seed)
        engine = InProcessEngine(toy_clients(1, local_keys=BN_LOCAL), state_root=tmp_path / str(i))
        replies.append(engine.fit(task)["site_a"])
        # the process's own streams go on as if no training had happened
        after = (torch.rand(1).item(), float(np.random.rand()), random.random())
        torch.manual_seed(process_seed)
        np.random.seed(process_seed)
        random.seed(process_seed)
        assert after == (torch.rand(1).item(), float(np.random.rand()), random.random())
    assert replies[0].ok and replies[0].payload == replies[1].payload
    # a different round draws other dropout masks (the seed is per round, not one constant)
    again = InProcessEngine(toy_clients(1, local_keys=BN_LOCAL), state_root=tmp_path / "r2")
    other = again.fit({"site_a": FitTask("run1", 2, payload, {}, committed=0, local_keys=tuple(BN_LOCAL.patterns))})["site_a"]
    assert other.payload != replies[0].payload
