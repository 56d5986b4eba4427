"""The remote engine through the wire codec (loopback nodes, no network): the same run as in process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dsfed.federated.engines.base import EvaluateReply, FitTask, QueryReply
from dsfed.federated.engines.node import Node, NodeConfig
from dsfed.federated.engines.remote import LoopbackTransport, RemoteEngine
from dsfed.federated.engines.wire import MESSAGES, QueryTask, SetupTask, decode, encode
from dsfed.federated.errors import FederatedError
from dsfed.federated.ledger import read_ledger
from dsfed.stages.federated_run import remote_setup, run_method
from dsfed.stages.prepare import store_path
from tests.federated.project import tiny_params as _params


def test_every_message_survives_the_wire() -> None:
    fit = FitTask("run1", 3, b"\x00weights\xff", {"prox_mu": 0.01}, committed=2, keep=(1,), local_keys=(r"\.bn\.",))
    for message in (fit, QueryTask(None), QueryTask("r"), SetupTask("federated", "k", {"a": [1, 2]}),
                    QueryReply("a", samples={"train": 3}, fingerprint="f", state_rounds=[1, 2], holds={"teacher": "ab"}),
                    EvaluateReply("b", error="disk full")):
        kind, meta, payload = encode(message)
        assert kind in MESSAGES and decode(kind, meta, payload) == message
    with pytest.raises(FederatedError, match="unknown engine message kind"):
        decode("train", {}, b"")
    with pytest.raises(FederatedError, match="wire version"):
        decode("query", {"run": None, "wire": 0}, b"")


def _loopback(params, method: str, artifacts: Path, work: Path, fresh: bool = False) -> tuple[RemoteEngine, LoopbackTransport]:
    nodes = [Node(NodeConfig(name, store_path(artifacts, name), work / "node-state", trainable=name != params.data.holdout))
             for name in params.federation]
    transport = LoopbackTransport(nodes, fresh=fresh)
    engine = RemoteEngine(transport, remote_setup(params, method), list(params.federation), holdout=[params.data.holdout],
                          name="loopback")
    return engine, transport


@pytest.mark.parametrize("fresh", [False, True], ids=["one-node-object", "a-new-node-per-message"])
def test_a_run_through_the_wire_equals_the_in_process_run(project: Path, stores: Path, fresh: bool) -> None:
    """Also when every message meets a freshly built node (Flower's one ClientApp process per message): the
    node rebuilds its client from the setup on its disk and its state from its own state folder."""
    params = _params(project, {"fedunet": {"model": "unet", "input_size": 32}})
    local = run_method(params, "fedunet", stores, stores / "federated/local", progress=False)
    engine, _ = _loopback(params, "fedunet", stores, stores / "federated/remote", fresh=fresh)
    remote = run_method(params, "fedunet", stores, stores / "federated/remote", progress=False, engine=engine)
    assert remote.selected_round == local.selected_round and remote.curve == local.curve and remote.test == local.test
    assert all(torch.equal(remote.final[k], v) for k, v in local.final.items())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(read_ledger(stores / "federated/remote/ledger.csv")) == strip(read_ledger(stores / "federated/local/ledger.csv"))
    # each node kept its own state in its own folder, as a hospital's disk would
    state = stores / "federated/remote/node-state"
    assert sorted(p.name for p in state.iterdir()) == ["a", "b", "h"] and all((state / n / "setup.json").is_file() for n in "abh")
    assert [len(list((state / n).glob("*/round-*.pt"))) > 0 for n in "abh"] == [True, True, False]   # h never trains


def test_a_node_that_is_gone_is_left_out_and_a_lost_quorum_is_one_line(project: Path, stores: Path) -> None:
    params = _params(project, {"fedunet": {"model": "unet", "input_size": 32}}, rounds=1)
    engine, transport = _loopback(params, "fedunet", stores, stores / "federated/gone")
    replies = engine.query(["a", "b"], None)
    assert all(r.ok for r in replies.values())
    transport.down.add("b")
    fit = engine.fit({"b": FitTask("x", 1, b"")})["b"]
    assert not fit.ok and "not connected" in fit.error
    with pytest.raises(FederatedError, match="held out"):
        engine.fit({"h": FitTask("x", 1, b"")})
    engine, transport = _loopback(params, "fedunet", stores, stores / "federated/quorum")
    transport.down.add("b")   # min_clients is 2 of the 2 training clients: the run cannot go on
    with pytest.raises(FederatedError) as info:
        run_method(params, "fedunet", stores, stores / "federated/quorum", progress=False, engine=engine)
    assert "\n" not in str(info.value) and "b" in str(info.value)
