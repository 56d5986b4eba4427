"""SAM-Fed through a remote engine: every client a node that builds its own client from the server's setup
(its own store, its copy of the public store and of the checkpoints), the teacher delivered over the wire;
the same numbers, weights and ledger as in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dsfed.federated.engines.node import Node, NodeConfig
from dsfed.federated.engines.remote import LoopbackTransport, RemoteEngine
from dsfed.federated.errors import FederatedError
from dsfed.federated.ledger import read_ledger
from dsfed.federated.serialize import from_bytes
from dsfed.samfed.clients import samfed_setup
from dsfed.samfed.run import run_variant
from dsfed.samfed.task import public_store, samfed_root
from dsfed.stages.prepare import store_path
from tests.conftest import ModuleTmp
from tests.samfed.tiny import build_task


@pytest.fixture(scope="module")
def task(module_tmp: ModuleTmp) -> Path:
    root = module_tmp("samfed-remote")
    build_task(root, rounds=2)
    return root


def _engine(params, variant: str, artifacts: Path, state: Path, public: Path | None = None) -> RemoteEngine:
    nodes = [Node(NodeConfig(name, store_path(samfed_root(artifacts), name), state, public=public)) for name in params.samfed.clients]
    return RemoteEngine(LoopbackTransport(nodes, fresh=True), samfed_setup(params, variant, public_store(artifacts)),
                        list(params.samfed.clients), name="loopback")


@pytest.mark.parametrize("variant", ["samfed", "hetero"])
def test_a_variant_on_nodes_equals_the_in_process_run(task: Path, tmp_path: Path, variant: str) -> None:
    params = build_task(task, rounds=2)
    art = task / "artifacts"
    local = run_variant(params, variant, art, tmp_path / "local", progress=False)
    copy = tmp_path / "hospital-public"   # the node's own copy of the public store
    import shutil

    shutil.copytree(public_store(art), copy)
    remote = run_variant(params, variant, art, tmp_path / "remote", progress=False,
                         engine=_engine(params, variant, art, tmp_path / "node-state", public=copy))
    assert remote["curve"] == local["curve"] and remote["test"] == local["test"] and remote["selected_round"] == local["selected_round"]
    a, b = (from_bytes((tmp_path / f"{n}/model.safetensors").read_bytes()) for n in ("local", "remote"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [(r["round"], r["client"], r["direction"], r["what"], r["bytes"]) for r in rows]  # noqa: E731
    assert strip(read_ledger(tmp_path / "remote/ledger.csv")) == strip(read_ledger(tmp_path / "local/ledger.csv"))
    # the teacher's soft labels were cached at the nodes, not in the server's output folder
    if variant == "samfed":
        assert list((tmp_path / "node-state/samfed-cache").glob("*/*/teacher-probs.safetensors")) and not list((tmp_path / "remote/client-cache").glob("*/*"))
    assert json.loads((tmp_path / "remote/metrics.json").read_text())["test"] == local["test"]


def test_a_fresh_run_over_an_old_teacher_cache_takes_the_teacher_again(task: Path, tmp_path: Path) -> None:
    """A new configuration clears the clients' caches after their first query read them: the clients must
    forget the digest they read, take the teacher again and train (found by a relock: FileNotFoundError)."""
    import shutil

    params = build_task(task, rounds=2)
    art = task / "artifacts"
    first = run_variant(params, "samfed", art, tmp_path / "out", progress=False)
    shutil.rmtree(tmp_path / "out/checkpoints")   # as after a code or params change: a fresh run, the old cache still there
    again = run_variant(params, "samfed", art, tmp_path / "out", progress=False)
    assert again["curve"] == first["curve"] and again["test"] == first["test"]
    assert [r["what"] for r in read_ledger(tmp_path / "out/ledger.csv")].count("teacher") == len(params.samfed.clients)


def test_a_node_without_the_public_store_fails_its_setup_with_one_line(task: Path, tmp_path: Path) -> None:
    params = build_task(task, rounds=2)
    art = task / "artifacts"
    with pytest.raises(FederatedError, match=r"client c1 did not answer: setup failed: FederatedError: client c1: the public store .*missing not found"):
        run_variant(params, "samfed", art, tmp_path / "out", progress=False,
                    engine=_engine(params, "samfed", art, tmp_path / "state", public=tmp_path / "missing"))


@pytest.mark.slow
@pytest.mark.extended   # make test-all: the simulation engine is test_flower_simulation's kind (2 min)
def test_a_variant_on_the_simulation_engine_equals_the_in_process_run(task: Path, tmp_path: Path) -> None:
    """The samfed stage with federated.engine: simulation: Flower's ServerApp and ClientApp, the teacher
    delivered through Flower messages; the same curve, test metrics and weights as in process."""
    import yaml

    from dsfed.config import load_params
    from dsfed.stages.samfed import run_samfed_variant

    params = build_task(task, rounds=2)
    art = task / "artifacts"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as a simulated node with client_cpus 1 (Ray sets one OpenMP thread): the same sums
    try:
        local = run_variant(params, "samfed", art, tmp_path / "local", progress=False)
    finally:
        torch.set_num_threads(threads)
    raw = params.model_dump(mode="json")
    raw["federated"] |= {"engine": "simulation", "flower": {**raw["federated"]["flower"], "client_cpus": 1, "timeout_s": 300}}
    (task / "params-simulation.yaml").write_text(yaml.safe_dump(raw))
    simulated = load_params(task / "params-simulation.yaml")
    metrics = run_samfed_variant(simulated, "samfed", art, params_path=task / "params-simulation.yaml")
    out = art / "samfed/variants/samfed"
    assert metrics["curve"] == local["curve"] and metrics["test"] == local["test"]
    a, b = (from_bytes(p.read_bytes()) for p in (tmp_path / "local/model.safetensors", out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["what"] for r in read_ledger(out / "ledger.csv")][:2] == ["teacher", "teacher"]
    assert (out / "client-cache/README.txt").is_file()
