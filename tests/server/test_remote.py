"""DSFedMed's server stages with the clients behind a remote engine: the server (no ``artifacts/clients`` in its
folder) trains, every client is a node over its own store that scores the models it is sent and keeps the
student it deploys; the same models, metrics and ledger as in process."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from dsfed.config import Params
from dsfed.federated.engines import Engine
from dsfed.federated.engines.node import Node, NodeConfig
from dsfed.federated.engines.remote import LoopbackTransport, RemoteEngine
from dsfed.federated.engines.wire import SetupTask
from dsfed.federated.ledger import read_ledger
from dsfed.stages.distill import run_distill_stage
from dsfed.stages.prepare import store_path
from dsfed.stages.server_sam import run_server_sam_stage
from tests.generation.test_stages import chain  # noqa: F401 - the module-scoped fixture
from tests.server.test_stages import _weights, server  # noqa: F401 - the module-scoped fixture


def _connect(params: Params, artifacts: Path, state: Path, down: Sequence[str] = ()):  # noqa: ANN202
    """``connect(setup, clients)`` over fresh loopback nodes (one Node per message, as on a SuperNode)."""
    def connect(setup: SetupTask, names: Sequence[str]) -> Engine:
        nodes = [Node(NodeConfig(n, store_path(artifacts, n), state, trainable=n != params.data.holdout)) for n in names]
        transport = LoopbackTransport(nodes, fresh=True)
        transport.down.update(down)
        return RemoteEngine(transport, setup, list(names), name="loopback")
    return connect


def _server_folder(root: Path, tmp: Path) -> Path:
    """The server's artifacts: its inputs (synthetic sets, the student, the server SAM), no client store."""
    art = tmp / "server-artifacts"
    for sub in ("synthetic", "federated", "server_sam"):
        shutil.copytree(root / "artifacts" / sub, art / sub)
    return art


def _rows(path: Path) -> list[tuple]:
    return [(r["round"], r["client"], r["direction"], r["what"], r["bytes"]) for r in read_ledger(path)]


def test_server_sam_and_distill_with_the_clients_on_nodes_equal_the_in_process_run(server: tuple[Path, Params], tmp_path: Path) -> None:  # noqa: F811
    root, params = server
    local = root / "artifacts"
    art = _server_folder(root, tmp_path)
    shutil.rmtree(art / "server_sam")
    connect = _connect(params, local, tmp_path / "nodes")
    remote_sam = run_server_sam_stage(params, art, progress=False, connect=connect)
    assert not (art / "clients").exists()
    local_sam = json.loads((local / "server_sam/metrics.json").read_text())
    assert remote_sam["history"] == local_sam["history"] and remote_sam["selected_epoch"] == local_sam["selected_epoch"]
    a, b = _weights(local / "server_sam"), _weights(art / "server_sam")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(art / "server_sam/ledger.csv") == _rows(local / "server_sam/ledger.csv")

    remote = run_distill_stage(params, art, connect=connect)
    here = json.loads((local / "distill/metrics.json").read_text())
    assert remote["guard"] == here["guard"] and remote["rounds"] == here["rounds"]
    for folder in ("distill/sam", "distill/tiny", "distill/unguarded/tiny"):
        a, b = _weights(local / folder), _weights(art / folder)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder
    assert _rows(art / "distill/ledger.csv") == _rows(local / "distill/ledger.csv")
    # every node (the held-out one too) keeps the student it deploys, in its own state folder
    student = (art / "distill/tiny/model.safetensors").read_bytes()
    for client in params.clients:
        assert (tmp_path / "nodes" / "received" / client / "deployed_model.safetensors").read_bytes() == student
    assert not list((art / "distill/checkpoints").glob("*/received"))   # nothing of the clients' kept at the server
    # the node's state store keeps one run and deletes every other folder in its own: the student lies beside it
    from dsfed.federated.engines.client_state import ClientStateStore

    for client in params.clients:
        ClientStateStore(tmp_path / "nodes" / client).save("another-run", 1, {})
        assert (tmp_path / "nodes" / "received" / client / "deployed_model.safetensors").read_bytes() == student


def test_a_node_that_is_gone_misses_the_delivery_and_the_stage_says_so(server: tuple[Path, Params], tmp_path: Path,  # noqa: F811
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    root, params = server
    art = _server_folder(root, tmp_path)
    holdout = params.data.holdout
    assert holdout is not None
    run_distill_stage(params, art, connect=_connect(params, root / "artifacts", tmp_path / "nodes", down=[holdout]))
    assert f"{holdout} could not take the distilled student" in caplog.text
    ledger = read_ledger(art / "distill/ledger.csv")
    receipts = {r["client"] for r in ledger if r["what"] == "deployed_model_receipt"}
    assert receipts == set(params.training_clients)
    assert not (tmp_path / "nodes" / "received" / holdout).exists()


def test_a_validation_client_refuses_a_damaged_delivery_and_an_unknown_model(server: tuple[Path, Params], tmp_path: Path) -> None:  # noqa: F811
    import hashlib

    from dsfed.federated.engines.base import ClientFailure
    from dsfed.federated.errors import FederatedError
    from dsfed.federated.validator import DEPLOYED_MODEL, ValidationClient
    from dsfed.models.card import architecture

    root, params = server
    client = ValidationClient("a", store_path(root / "artifacts", "a"), {"tiny": architecture("tinysam_demo", 64)}, 2,
                              params.data.mask_size, tmp_path / "received")
    good = (root / "artifacts/distill/tiny/model.safetensors").read_bytes()
    with pytest.raises(ClientFailure, match="arrived damaged"):
        client.receive(DEPLOYED_MODEL, good[:-1], hashlib.sha256(good).hexdigest())
    with pytest.raises(ClientFailure, match="not safetensors"):
        client.receive(DEPLOYED_MODEL, b"not weights", hashlib.sha256(b"not weights").hexdigest())
    assert not (tmp_path / "received").exists() and client.holds() == {}
    assert client.receive(DEPLOYED_MODEL, good, hashlib.sha256(good).hexdigest())["bytes"] == len(good)
    assert client.holds() == {DEPLOYED_MODEL: hashlib.sha256(good).hexdigest()}
    with pytest.raises(FederatedError, match="named model 'sam'"):
        client.evaluate_model("sam", {}, "val")
    with pytest.raises(FederatedError, match="must not ask it to train"):
        client.train({}, 1, {})


@pytest.mark.slow
@pytest.mark.extended   # make test-all: the simulation engine is test_flower_simulation's kind (2 min)
def test_server_stages_on_the_simulation_engine_equal_the_in_process_run(server: tuple[Path, Params], tmp_path: Path) -> None:  # noqa: F811
    """server_sam and distill with federated.engine: simulation: each runs as a Flower ServerApp task, the
    clients are simulated SuperNodes (ClientApp processes) over their own stores that validate and receive
    the student through Flower messages; the same models and ledgers as in process."""
    import yaml

    from dsfed.config import load_params

    root, params = server
    local = root / "artifacts"
    art = tmp_path / "artifacts"
    for sub in ("clients", "synthetic", "federated"):   # the simulated nodes read artifacts/clients/<client>
        shutil.copytree(local / sub, art / sub)
    raw = params.model_dump(mode="json")
    raw["federated"] |= {"engine": "simulation", "flower": {**raw["federated"]["flower"], "client_cpus": 1, "timeout_s": 300}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    simulated = load_params(tmp_path / "params.yaml")
    run_server_sam_stage(simulated, art, progress=False, params_path=tmp_path / "params.yaml")
    run_distill_stage(simulated, art, params_path=tmp_path / "params.yaml")
    for folder in ("server_sam", "distill/sam", "distill/tiny", "distill/unguarded/tiny"):
        a, b = _weights(local / folder), _weights(art / folder)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder
    for ledger in ("server_sam/ledger.csv", "distill/ledger.csv"):
        assert _rows(art / ledger) == _rows(local / ledger), ledger
    student = (art / "distill/tiny/model.safetensors").read_bytes()
    states = art / ".engine-runs/distill/client-state"
    for client in params.clients:   # the simulated nodes' own folders
        assert (states / "received" / client / "deployed_model.safetensors").read_bytes() == student
    assert not list((art / "server_sam").glob("flower-status*")) and not (art / "server_sam/client-state").exists()
