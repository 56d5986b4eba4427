"""``controlnet@<client>`` through a remote engine: the client's node trains its ControlNet on its own store
and sends its upload folder's files; the server (no client store in its folder) writes them. The same
ControlNet, masks, ledger and losses as the in-process stage."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from safetensors import safe_open
from safetensors.torch import load_file

from dsfed.config import Params
from dsfed.federated.engines import Engine
from dsfed.federated.engines.node import Node, NodeConfig
from dsfed.federated.engines.remote import LoopbackTransport, RemoteEngine
from dsfed.federated.engines.wire import SetupTask
from dsfed.federated.errors import FederatedError
from dsfed.federated.ledger import read_ledger
from dsfed.generation.node import pack_folder, unpack_folder
from dsfed.stages.controlnet import generator_dir, run_controlnet_stage
from dsfed.stages.prepare import store_path
from tests.generation.test_stages import chain  # noqa: F401 - the module-scoped fixture

TIMINGS = ("seconds", "steps_per_s", "code_hash")


def _connect(artifacts: Path, state: Path, pretrained: Path | None = None):  # noqa: ANN202
    def connect(setup: SetupTask, names: Sequence[str]) -> Engine:
        nodes = [Node(NodeConfig(n, store_path(artifacts, n), state, pretrained=pretrained)) for n in names]
        return RemoteEngine(LoopbackTransport(nodes, fresh=True), setup, list(names), name="loopback")
    return connect


def test_a_node_trains_the_same_controlnet_and_the_server_never_opens_the_store(chain: tuple[Path, Params], tmp_path: Path,  # noqa: F811
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root, params = chain
    local = root / "artifacts"
    art = tmp_path / "server"
    shutil.copytree(local / "backbone", art / "backbone")
    monkeypatch.chdir(root)   # the server's project folder (the backbone manifest's paths are relative to it)
    summary = run_controlnet_stage(params, "a", art, progress=False, connect=_connect(local, tmp_path / "nodes"))
    assert not (art / "clients").exists()
    mine, theirs = generator_dir(art, "a"), generator_dir(local, "a")
    a, b = load_file(str(theirs / "controlnet.safetensors")), load_file(str(mine / "controlnet.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with safe_open(str(mine / "controlnet.safetensors"), "pt") as fh, safe_open(str(theirs / "controlnet.safetensors"), "pt") as gh:
        assert fh.metadata()["params"] == gh.metadata()["params"]   # the server's manifest, not the node's copy
    assert np.array_equal(zarr.open_group(mine / "masks.zarr", mode="r")["masks"][:], zarr.open_group(theirs / "masks.zarr", mode="r")["masks"][:])
    assert read_ledger(mine / "ledger.csv") == read_ledger(theirs / "ledger.csv")
    here = json.loads((theirs / "generator.json").read_text())
    assert {k: v for k, v in summary.items() if k not in TIMINGS} == {k: v for k, v in here.items() if k not in TIMINGS}
    assert (mine / "dvclive/plots/metrics/loss.tsv").read_text() == (theirs / "dvclive/plots/metrics/loss.tsv").read_text()
    # the held-out client is not asked: the server writes its folder
    held = run_controlnet_stage(params, "h", art, progress=False, connect=_connect(local, tmp_path / "nodes"))
    assert held["held_out"] and not (tmp_path / "nodes" / "generator" / "h").exists()


@pytest.mark.parametrize("client", ["a", "h"])
def test_the_audit_runs_at_the_node_and_its_grid_of_real_images_stays_there(chain: tuple[Path, Params], tmp_path: Path,  # noqa: F811
                                                                            monkeypatch: pytest.MonkeyPatch, client: str) -> None:
    from dsfed.stages.quality import quality_dir, run_quality_stage

    root, params = chain
    local = root / "artifacts"
    art = tmp_path / "server"
    for sub in ("backbone", "synthetic"):
        shutil.copytree(local / sub, art / sub)
    monkeypatch.chdir(root)
    nodes = tmp_path / "nodes"
    quality = run_quality_stage(params, client, art, progress=False, connect=_connect(local, nodes))
    here = json.loads((quality_dir(local, client) / "quality.json").read_text())
    assert quality == here   # no wall time in quality.json (dsfed.timings): the same audit, the same bytes
    for name in ("quality.json", "audit_ledger.csv"):
        assert (quality_dir(art, client) / name).read_bytes() == (quality_dir(local, client) / name).read_bytes(), name
    at_node = nodes / "generator" / client / "quality/grid.png"
    assert at_node.read_bytes() == (quality_dir(local, client) / "grid.png").read_bytes()
    assert (quality_dir(art, client) / "grid.png").read_bytes() != at_node.read_bytes()   # the server's is a blank
    assert not (art / "clients").exists()
    # a second audit does not send the synthetic set again
    again = run_quality_stage(params, client, art, progress=False, connect=_connect(local, nodes))
    assert again == here


def test_a_node_without_the_backbone_files_fails_with_one_line(chain: tuple[Path, Params], tmp_path: Path,  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root, params = chain
    art = tmp_path / "server"
    shutil.copytree(root / "artifacts/backbone", art / "backbone")
    monkeypatch.chdir(root)
    empty = tmp_path / "node-pretrained"
    empty.mkdir()
    with pytest.raises(FederatedError, match="controlnet@a: the client's node could not train its ControlNet: setup failed"):
        run_controlnet_stage(params, "a", art, progress=False, connect=_connect(root / "artifacts", tmp_path / "nodes", pretrained=empty))
    assert not generator_dir(art, "a").exists()


def test_an_upload_cannot_name_a_file_outside_its_folder(tmp_path: Path) -> None:
    (tmp_path / "src/sub").mkdir(parents=True)
    (tmp_path / "src/sub/x.bin").write_bytes(b"\x00\x01")
    (tmp_path / "src/empty").write_bytes(b"")
    files = pack_folder(tmp_path / "src")
    unpack_folder(files, tmp_path / "copy")
    assert (tmp_path / "copy/sub/x.bin").read_bytes() == b"\x00\x01" and (tmp_path / "copy/empty").read_bytes() == b""
    for bad in ("../evil", "/etc/evil"):
        with pytest.raises(FederatedError, match="outside its folder"):
            unpack_folder({bad: torch.zeros(1, dtype=torch.uint8)}, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil").exists()


@pytest.mark.slow
@pytest.mark.extended   # make test-all: the simulation engine is test_flower_simulation's kind (1.7 min)
def test_controlnet_on_the_simulation_engine_equals_the_in_process_stage(chain: tuple[Path, Params], tmp_path: Path,  # noqa: F811
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """controlnet@a with federated.engine: simulation: a Flower ServerApp task, the client a simulated SuperNode
    (a ClientApp process over its own store) whose upload folder comes back through a Flower message."""
    import yaml

    from dsfed.config import load_params

    root, params = chain
    art = tmp_path / "artifacts"
    for sub in ("backbone", "clients"):
        shutil.copytree(root / "artifacts" / sub, art / sub)
    monkeypatch.chdir(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as a simulated node with client_cpus 1 (Ray sets one OpenMP thread): the same sums
    try:
        local = run_controlnet_stage(params, "a", art, progress=False)
        shutil.move(str(generator_dir(art, "a")), tmp_path / "local")
    finally:
        torch.set_num_threads(threads)
    raw = params.model_dump(mode="json")
    raw["federated"] |= {"engine": "simulation", "flower": {**raw["federated"]["flower"], "client_cpus": 1, "timeout_s": 300}}
    (root / "params-simulation.yaml").write_text(yaml.safe_dump(raw))
    simulated = load_params(root / "params-simulation.yaml")
    summary = run_controlnet_stage(simulated, "a", art, progress=False, params_path=root / "params-simulation.yaml")
    a, b = load_file(str(tmp_path / "local/controlnet.safetensors")), load_file(str(generator_dir(art, "a") / "controlnet.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_ledger(generator_dir(art, "a") / "ledger.csv") == read_ledger(tmp_path / "local/ledger.csv")
    assert {k: v for k, v in summary.items() if k not in TIMINGS} == {k: v for k, v in local.items() if k not in TIMINGS}
    assert not list(generator_dir(art, "a").glob("flower-status*"))
