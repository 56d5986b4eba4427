"""The remote engine through the wire codec (loopback nodes, no network): the same run as in process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dsfed.config import parse_params
from dsfed.federated.engines.base import EvaluateReply, FitTask, QueryReply
from dsfed.federated.engines.node import Node, NodeConfig
from dsfed.federated.engines.remote import LoopbackTransport, RemoteEngine
from dsfed.federated.engines.wire import MESSAGES, QueryTask, SetupTask, decode, encode
from dsfed.federated.errors import FederatedError
from dsfed.federated.ledger import read_ledger
from dsfed.stages.federated_run import remote_setup, run_method
from dsfed.stages.prepare import store_path
from tests.federated.project import tiny_params as _params
from tests.federated.project import tiny_raw


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


def test_a_node_that_is_not_connected_gets_no_ledger_row(project: Path, stores: Path) -> None:
    """Node b goes away after its first training reply: from then on nothing is sent to it, so the ledger
    (what crossed the wire) has b's round-0 validation, its round-1 download and update, and no row after them."""
    raw = tiny_raw({"fedunet": {"model": "unet", "input_size": 32}}, rounds=2)
    raw["federated"]["min_clients"] = 1
    params = parse_params(raw, root=project)
    engine, transport = _loopback(params, "fedunet", stores, stores / "federated/gone")

    def exchange(messages: dict, real=transport.exchange) -> dict:   # the real exchange, then b's node is gone
        answers = real(messages)
        if any(kind == "fit" for kind, _, _ in messages.values()):
            transport.down.add("b")
        return answers

    transport.exchange = exchange  # type: ignore[method-assign]
    run_method(params, "fedunet", stores, stores / "federated/gone", progress=False, engine=engine)
    rows = read_ledger(stores / "federated/gone/ledger.csv")
    assert [(r["round"], r["direction"], r["what"]) for r in rows if r["client"] == "b"] == [
        (0, "down", "val_weights"), (0, "up", "val_metrics"), (1, "down", "global_weights"), (1, "up", "update")]
    assert {(r["round"], r["direction"], r["what"]) for r in rows if r["client"] == "a"} >= {
        (1, "down", "global_weights"), (1, "up", "update"), (2, "down", "global_weights"), (2, "up", "update")}


def test_a_node_finds_the_checkpoint_in_its_own_copy_of_the_pretrained_dir(project: Path, stores: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``dsfed node start --pretrained DIR``: the same file under the node's own folder, checked by sha256."""
    monkeypatch.chdir(project)   # params paths are relative to the project, where stages run
    from safetensors.torch import save_file

    from dsfed.federated.engines.node import local_checkpoint

    server_dir = project / "data/pretrained"
    (server_dir / "unet").mkdir(parents=True)
    save_file({"w": torch.ones(3)}, str(server_dir / "unet/init.safetensors"))
    params = _params(project, {"fedunet": {"model": "unet", "input_size": 32, "checkpoint": "data/pretrained/unet/init.safetensors"}})
    spec = params.federated.methods["fedunet"]
    setup = remote_setup(params, "fedunet")
    digest = setup.settings["checkpoint_sha256"]
    node_dir = tmp_path / "hospital-copy"
    (node_dir / "unet").mkdir(parents=True)
    (node_dir / "unet/init.safetensors").write_bytes((server_dir / "unet/init.safetensors").read_bytes())
    node = NodeConfig("a", store_path(stores, "a"), tmp_path / "state", pretrained=node_dir)
    assert local_checkpoint(params, spec, node, digest).checkpoint == node_dir / "unet/init.safetensors"
    save_file({"w": torch.zeros(3)}, str(node_dir / "unet/init.safetensors"))
    with pytest.raises(FederatedError, match=r"client a: checkpoint .*hospital-copy/unet/init.safetensors differs from the server's"):
        local_checkpoint(params, spec, node, digest)
    (node_dir / "unet/init.safetensors").unlink()
    with pytest.raises(FederatedError, match=r"client a: checkpoint .* not found; copy the server's federated.pretrained_dir"):
        local_checkpoint(params, spec, node, digest)
    # without --pretrained the node uses the server's path (one machine, or a shared mount)
    (server_dir / "unet/init.safetensors").write_bytes((server_dir / "unet/init.safetensors").read_bytes())
    assert local_checkpoint(params, spec, NodeConfig("a", store_path(stores, "a"), tmp_path / "s"), digest).checkpoint == spec.checkpoint


def test_a_codec_run_through_the_wire_equals_its_in_process_run_at_a_third_of_the_bytes(project: Path, stores: Path) -> None:
    """The node reads the codec from the download (fp16 weights asking for bf16 deltas, zstd) and answers in it."""
    methods = {"fedunet": {"model": "unet", "input_size": 32}}
    plain = run_method(_params(project, methods), "fedunet", stores, stores / "federated/plain", progress=False)
    raw = tiny_raw(methods)
    raw["federated"]["codec"] = {"down": "fp16", "up": "bf16", "delta": True, "compress": "zstd"}
    params = parse_params(raw, root=project)
    local = run_method(params, "fedunet", stores, stores / "federated/local", progress=False)
    engine, _ = _loopback(params, "fedunet", stores, stores / "federated/remote", fresh=True)
    remote = run_method(params, "fedunet", stores, stores / "federated/remote", progress=False, engine=engine)
    assert remote.curve == local.curve and remote.test == local.test
    assert all(torch.equal(remote.final[k], v) for k, v in local.final.items())
    rows = {name: read_ledger(stores / f"federated/{name}/ledger.csv") for name in ("plain", "local", "remote")}
    assert rows["remote"] == rows["local"]
    train = {name: sum(r["bytes"] for r in rs if r["what"] in ("global_weights", "update")) for name, rs in rows.items()}
    assert train["local"] < 0.4 * train["plain"], train
    assert abs(local.test["h"]["dice"] - plain.test["h"]["dice"]) < 0.05   # tiny model, 2 rounds: close, not equal
