"""The Flower ClientApp of a hospital's node: every message answered by a :class:`~dsfed.federated.engines.node.Node`.

The SuperNode's ``--node-config`` names the node (``dsfed node start`` writes it): ``client`` (its name in
the server's params), ``data`` (its own store), ``state`` (its state folder) and ``device``; a simulated
node (``federated.engine: simulation``) gets them from its partition ID. A SuperNode runs a fresh ClientApp
process per message, so the node rebuilds its client from the setup on its disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from dsfed.federated.engines.node import Node, NodeConfig
from dsfed.federated.flower.messages import from_record, to_record
from dsfed.federated.flower.secagg import answer_secure_fit, is_secure_fit, secagg_when_asked

__all__ = ["app", "node_config"]

app = ClientApp(mods=[secagg_when_asked])  # SecAgg+ messages go through Flower's secaggplus_mod
_NODES: dict[tuple[str, ...], Node] = {}  # one per node config, for a process that serves several (simulation)


def node_config(values: Mapping[str, Any]) -> NodeConfig:
    """The node's config from its Flower ``node_config``."""
    missing = [k for k in ("client", "data", "state") if k not in values]
    if missing:
        raise KeyError(f"the SuperNode's --node-config lacks {', '.join(missing)} (start it with `dsfed node start`)")
    pretrained, public = values.get("pretrained"), values.get("public")
    return NodeConfig(client=str(values["client"]), store=Path(str(values["data"])), state=Path(str(values["state"])),
                      device=str(values.get("device", "auto")), pretrained=Path(str(pretrained)) if pretrained else None,
                      public=Path(str(public)) if public else None)


def _config(context: Context) -> NodeConfig:
    """The node's config: a SuperNode's ``--node-config``, or a simulated node's from its partition ID."""
    values = dict(context.node_config)
    if "client" not in values and "partition-id" in values:
        from dsfed.federated.flower.simulation import simulated_node

        values = simulated_node(values, dict(context.run_config))
    return node_config(values)


def _node(context: Context) -> Node:
    config = _config(context)
    key = (config.client, str(config.store), str(config.state), config.device, str(config.pretrained), str(config.public))
    if key not in _NODES:
        _NODES[key] = Node(config)
    return _NODES[key]


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    """Who this node is (the server maps Flower node IDs to client names with it)."""
    return Message(RecordDict({"hello": ConfigRecord({"client": _config(context).client})}), reply_to=msg)


def _answer(msg: Message, context: Context) -> Message:
    kind, meta, payload = from_record(msg.content)
    return Message(to_record(*_node(context).answer(kind, meta, payload)), reply_to=msg)


@app.train()
def fit(msg: Message, context: Context) -> Message:
    """A round's local training (under SecAgg+: the masked part of the update, :mod:`dsfed.federated.flower.secagg`)."""
    if is_secure_fit(msg):
        return Message(answer_secure_fit(_node(context), msg.content), reply_to=msg)
    return _answer(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Scores on a split."""
    return _answer(msg, context)


@app.query("setup")
def setup(msg: Message, context: Context) -> Message:
    """Build the client algorithm for a run."""
    return _answer(msg, context)


@app.query("query")
def query(msg: Message, context: Context) -> Message:
    """Sample counts, fingerprint, state held."""
    return _answer(msg, context)


@app.query("deliver")
def deliver(msg: Message, context: Context) -> Message:
    """A one-off payload (SAM-Fed's teacher)."""
    return _answer(msg, context)
