"""SecAgg+ for the aggregation: Flower's own workflow (server) and mod (client) around dsfed's fit.

The fast tests run the real ``SecAggPlusWorkflow``, the real ClientApp with ``secaggplus_mod`` and the real
nodes, joined by a loopback grid in this process instead of a SuperLink (the slow test in
``test_flower_simulation.py`` runs it on Flower's simulation engine). The server learns only the weighted
mean: within SecAgg+'s quantisation of plain FedAvg, bit-identical between two runs (seeded rounding).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto

from dsfed.config import Params, parse_params
from dsfed.federated.engines.remote import RemoteEngine
from dsfed.federated.errors import FederatedError
from dsfed.federated.flower import client_app
from dsfed.federated.flower.transport import GridTransport
from dsfed.federated.ledger import read_ledger
from dsfed.federated.secure import masked_part, rebuild, secure_tolerance
from dsfed.federated.settings import SecAggConfig
from dsfed.settings import ConfigError
from dsfed.stages.federated_run import holdout_clients, remote_setup, run_method
from dsfed.stages.prepare import store_path
from tests.federated.project import tiny_raw


class LoopbackGrid:
    """A Flower ``Grid`` whose nodes are the real ClientApp in this process (one context per node, kept
    across messages as a SuperNode keeps it); an exception in the app comes back as Flower's error reply."""

    def __init__(self, nodes: dict[int, dict[str, str]]) -> None:
        self.run = SimpleNamespace(run_id=7)
        self.contexts = {nid: Context(run_id=7, node_id=nid, node_config=cfg, state=RecordDict(), run_config={}) for nid, cfg in nodes.items()}
        self.replies: dict[str, Message] = {}
        self.seen: list[tuple[int, str]] = []   # (node, message type) of every message delivered

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            node = int(msg.metadata.dst_node_id)
            self.seen.append((node, msg.metadata.message_type))
            delivered = Message(recorddict_from_proto(recorddict_to_proto(msg.content)), dst_node_id=node,  # what a wire does to it
                                message_type=msg.metadata.message_type, group_id=msg.metadata.group_id)
            delivered.metadata.__dict__["_message_id"] = msg.metadata.message_id
            try:
                reply = client_app.app(delivered, self.contexts[node])
            except Exception as exc:  # what a SuperNode does with a ClientApp exception
                reply = Message(Error(code=3, reason=f"{type(exc).__name__}: {exc}"), reply_to=delivered)
            self.replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self.replies.pop(i) for i in list(ids) if i in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(list(messages)))


def _params(project: Path, secagg: dict[str, Any] | None, rounds: int = 1, clients: tuple[str, ...] = ("a", "b", "h")) -> Params:
    method: dict[str, Any] = {"model": "unet", "input_size": 32}
    raw = tiny_raw({"fedunet": method if secagg is None else {**method, "secagg": secagg}}, rounds=rounds, clients=clients)
    if secagg is not None:
        raw["federated"]["engine"] = "flower"
    return parse_params(raw, root=project)


def _secure_run(params: Params, artifacts: Path, work: Path) -> tuple[Any, LoopbackGrid]:
    grid = LoopbackGrid({i + 1: {"client": name, "data": str(store_path(artifacts, name)), "state": str(work / "node-state" / name),
                                 "device": "cpu"} for i, name in enumerate(params.federation)})
    transport = GridTransport(grid, list(params.federation), timeout_s=60)  # type: ignore[arg-type]
    engine = RemoteEngine(transport, remote_setup(params, "fedunet"), list(params.federation), holdout=holdout_clients(params), name="loopback")
    return run_method(params, "fedunet", artifacts, work, progress=False, engine=engine), grid


def test_the_server_gets_fedavg_within_quantisation_and_never_an_update(project: Path, stores: Path) -> None:
    plain = run_method(_params(project, None), "fedunet", stores, stores / "federated/plain", progress=False)
    params = _params(project, {})
    secure, grid = _secure_run(params, stores, stores / "federated/secure")

    counts = {"a": 6, "b": 6}   # 10 phantoms, 20 % val and 20 % test each
    bound = secure_tolerance(8.0, 2**22, counts)
    worst = max(float((secure.final[k].double() - v.double()).abs().max()) for k, v in plain.final.items() if v.dtype.is_floating_point)
    print(f"SecAgg+ vs FedAvg after one round: max abs difference {worst:.3g} (bound {bound:.3g})")
    assert 0 < worst <= bound, (worst, bound)   # quantised, and no further off than SecAgg+'s rounding allows
    assert all(torch.equal(secure.final[k], v) for k, v in plain.final.items() if not v.dtype.is_floating_point)
    assert secure.curve[1]["loss"] == plain.curve[1]["loss"]      # the clients' own metrics travel in the clear

    rows = read_ledger(stores / "federated/secure/ledger.csv")
    training = {(r["client"], r["direction"], r["what"]) for r in rows if r["round"] == 1 and "val" not in r["what"]}
    assert training == {(c, d, w) for c in "ab" for d, w in [("down", "secagg_setup"), ("up", "secagg_public_keys"), ("down", "secagg_public_keys"),
                                                             ("up", "secagg_key_shares"), ("down", "global_weights"), ("up", "masked_update"),
                                                             ("down", "secagg_unmask"), ("up", "secagg_mask_shares")]}
    assert not any(r["what"] == "update" for r in rows)
    assert all(node != 3 for node, kind in grid.seen if kind == "train")   # the held-out node never trains

    again, _ = _secure_run(params, stores, stores / "federated/again")   # seeded rounding: the same bits
    assert all(torch.equal(again.final[k], v) for k, v in secure.final.items())


def test_a_client_that_drops_out_is_left_out_and_the_sum_still_unmasks(project: Path) -> None:
    from dsfed.data.store import build_client_store

    params = _params(project, {"num_shares": 1.0, "reconstruction_threshold": 2}, clients=("a", "b", "c", "h"))
    for name in params.clients:
        build_client_store(params, name, store_path(project / "artifacts", name), root=project, progress=False)
    grid_nodes = {"c"}
    original = client_app.answer_secure_fit

    def failing(node: Any, content: RecordDict) -> RecordDict:
        if node.config.client in grid_nodes:
            raise OSError(f"the disk of {node.config.client} is gone")
        return original(node, content)

    client_app.answer_secure_fit = failing   # a node that dies while training, after it shared its keys
    try:
        run, _ = _secure_run(params, project / "artifacts", project / "artifacts/federated/drop")
    finally:
        client_app.answer_secure_fit = original
    rows = read_ledger(project / "artifacts/federated/drop/ledger.csv")
    masked = {r["client"] for r in rows if r["what"] == "masked_update"}
    assert masked == {"a", "b"}
    assert {r["client"] for r in rows if r["what"] == "secagg_mask_shares"} == {"a", "b"}  # they reveal c's mask secrets
    assert run.curve[1]["loss"] > 0


def test_too_tight_a_clipping_range_fails_the_round_with_one_line(project: Path, stores: Path) -> None:
    params = _params(project, {"clipping_range": 1e-9})
    with pytest.raises(FederatedError, match=r"round 1: only 0 of 2 clients finished.*beyond secagg.clipping_range"):
        _secure_run(params, stores, stores / "federated/clip")


def test_masked_part_and_rebuild_are_inverse() -> None:
    start = {"w": torch.randn(3, 4), "h": torch.randn(5, dtype=torch.float16), "steps": torch.tensor(4)}
    update = {"w": start["w"] + 0.01, "h": start["h"] - 0.5, "steps": torch.tensor(9)}
    layout, arrays, clear = masked_part(update, start, 1.0, "a", 1)
    assert [k for k, _ in layout] == ["h", "w"] and set(clear) == {"steps"}
    assert all(a.dtype == np.float64 for a in arrays)
    back = rebuild(start, layout, arrays, clear)
    assert torch.allclose(back["w"], update["w"]) and back["h"].dtype == torch.float16 and int(back["steps"]) == 9
    with pytest.raises(FederatedError, match="client a: round 1: its update of h reaches 0.5.*beyond secagg.clipping_range 0.1"):
        masked_part(update, start, 0.1, "a", 1)


def test_settings_refuse_what_secagg_cannot_do(project: Path) -> None:
    with pytest.raises(ConfigError, match="secagg needs federated.engine flower or simulation"):
        parse_params(tiny_raw({"fedunet": {"model": "unet", "secagg": {}}}), root=project)
    for method, match in [({"strategy": "centralized"}, "secagg: strategy 'centralized'"),
                          ({"dp": {"mode": "central"}}, "secagg with dp.mode central")]:
        raw = tiny_raw({"fedunet": {"model": "unet", "secagg": {}, **method}})
        raw["federated"]["engine"] = "flower"
        with pytest.raises(ConfigError, match=match):
            parse_params(raw, root=project)
    with pytest.raises(ValueError, match="as a count it must be at least 3"):
        SecAggConfig(num_shares=2)
